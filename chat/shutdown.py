"""Graceful shutdown: every socket of the worker gets a 1001 close frame before it exits."""
import logging

import gevent

from chat import runtime

logger = logging.getLogger(__name__)


def close_all(code, reason):
    """Close every open session of this worker with ``code``."""
    hub = runtime.current_hub()
    sessions = list(hub.sessions) if hub is not None else []
    for session in sessions:
        session.close(code, reason)
    logger.info("closing %s sockets with %s", len(sessions), code)
    if hub is not None:
        # Departs wait CHAT_PRESENCE_DEBOUNCE; a stopping worker may exit first, and its users
        # would look present until CHAT_PRESENCE_TTL.
        hub.tracker.flush()


def going_away_handler(previous):
    """Wrap a signal handler so that every socket gets a 1001 close frame first.

    On SIGTERM gunicorn waits ``graceful_timeout`` for the pool to drain, but sockets never
    drain: they would be dropped without a close frame and clients could not tell a restart
    from a network fault (PROTOCOL.md: 1001, then reconnect with ``since``).
    """
    def handler(signum, frame):
        # Blocking work does not belong in a signal handler (gunicorn #1126): use a greenlet.
        gevent.spawn(close_all, 1001, "server going away")
        if callable(previous):
            previous(signum, frame)

    return handler
