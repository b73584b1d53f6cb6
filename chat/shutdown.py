"""Graceful shutdown: the worker drains its sockets in batches, each told when to come back.

Closing 10,000 sockets at once brings 10,000 clients back within a quarter of a second, to
a replacement that sets up a few hundred a second. So the stopping worker refuses new
handshakes (chat/admission.py answers 503), closes ``CHAT_DRAIN_RATE`` sockets a second, and
sends each, just before its 1001 close, ``{"type":"reconnect","after":<seconds>}``: a random
delay spread so that the replacement's admission rate can take them back (docs/protocol.md,
"Restarts and admission"). The 1001 stays: version 1 clients reconnect on it with backoff.
"""
import logging
import random
import time

import gevent

from chat import admission, runtime
from chat.wsmends import encode_frame

logger = logging.getLogger(__name__)

#: Seconds between two batches of closes (the batch is the drain rate times this).
BATCH_EVERY = 0.05
#: The least a client is told to wait: the old worker stops accepting within about a second
#: of the signal, and the replacement must finish booting.
MIN_AFTER = 1.0


def reconnect_delays(count, handshake_rate, rand=random.random):
    """Return ``count`` delays (seconds): the comeback of ``count`` clients spread over the
    time one worker admitting ``handshake_rate`` a second needs to take them all back."""
    spread = count / handshake_rate
    return [round(MIN_AFTER + rand() * spread, 2) for _ in range(count)]


def hint_frame(after):
    """Return the frame of ``{"type":"reconnect","after":after}``, built without the encoder."""
    return encode_frame(b'{"type":"reconnect","after":%s}' % repr(after).encode())


def drain(sessions, code, reason, rate, handshake_rate, sleep=gevent.sleep, clock=time.monotonic):
    """Close ``sessions`` with ``code``, ``rate`` a second, each after a ``reconnect`` hint."""
    batch = max(1, round(rate * BATCH_EVERY))
    began = clock()
    delays = reconnect_delays(len(sessions), handshake_rate)
    for n, (session, after) in enumerate(zip(sessions, delays)):
        if n and n % batch == 0:
            # Paced by the clock, not by a sleep per batch: a slow batch does not slow the rest.
            sleep(max(0.0, began + n / rate - clock()))
        if session.closing:
            continue
        session.close(code, reason, farewell=hint_frame(after))


def close_all(code, reason, within=None):
    """Drain every open session of this worker with ``code``; flush its presence.

    ``within``: seconds the drain may take at most (gunicorn's graceful timeout, less the
    time the last clients get to answer): faster than ``CHAT_DRAIN_RATE`` when needed.
    """
    from django.conf import settings

    if admission.current().draining:
        return  # gunicorn signals a stopping worker again: one drain is enough
    admission.current().draining = True  # from now on handshakes get 503: go to the replacement
    hub = runtime.current_hub()
    sessions = list(hub.sessions) if hub is not None else []
    rate = settings.CHAT_DRAIN_RATE
    if within and len(sessions) / rate > within:
        rate = len(sessions) / within
    logger.info("closing %s sockets with %s, %.0f a second", len(sessions), code, rate)
    began = time.monotonic()
    drain(sessions, code, reason, rate, settings.CHAT_HANDSHAKE_RATE)
    logger.info("closed %s sockets in %.1f s", len(sessions), time.monotonic() - began)
    if hub is not None:
        # Departs wait CHAT_PRESENCE_DEBOUNCE; a stopping worker may exit first, and its users
        # would look present until CHAT_PRESENCE_TTL.
        hub.tracker.flush()


def drain_budget(graceful_timeout, close_timeout):
    """Return the seconds a drain may take so that its last clients still get their close."""
    return max(1.0, graceful_timeout - close_timeout - 1)


def going_away_handler(previous, within=None):
    """Wrap a signal handler so that every socket gets a 1001 close frame first.

    On SIGTERM gunicorn waits ``graceful_timeout`` for the pool to drain, but sockets never
    drain: they would be dropped without a close frame and clients could not tell a restart
    from a network fault (PROTOCOL.md: 1001, then reconnect with ``since``).
    """
    def handler(signum, frame):
        # Blocking work does not belong in a signal handler (gunicorn #1126): use a greenlet.
        gevent.spawn(close_all, 1001, "server going away", within)
        if callable(previous):
            previous(signum, frame)

    return handler
