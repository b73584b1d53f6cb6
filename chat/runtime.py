"""The worker's singletons, wired in one visible place: the hub (with its broker), the limiter,
the authority over the sockets, the handshakes' session look-ups and the HTTP streams.

Built on first use, in the worker after the fork; tests may ``reset()`` them.
"""
from django.conf import settings

import gevent

from chat import brokers, rooms
from chat.authority import Authority
from chat.handshake import SignIns
from chat.hub import CONTROL, Hub
from chat.longpoll import Streams
from chat.presence import DatabasePresence
from chat.ratelimit import RateLimiter

_hub = None
_loops = []  # the hub's and the authority's periodic greenlets
_limiter = None
_authority = None
_sign_ins = None
_streams = None


def hub():
    """Return the worker's hub, on the broker named by ``CHAT_BROKER``, keeping presence up.

    Its loops: presence upkeep every ``CHAT_PRESENCE_HEARTBEAT`` seconds, and the check of
    every room's cursor against ``Room.last_seq`` every ``CHAT_CURSOR_CHECK_INTERVAL``.
    """
    global _hub
    if _hub is None:
        _hub = Hub(brokers.from_settings(), fetch=rooms.messages_between,
                   presence_store=DatabasePresence(ttl=settings.CHAT_PRESENCE_TTL),
                   gap_wait=settings.CHAT_GAP_WAIT, last_seqs=rooms.last_seqs,
                   presence_debounce=settings.CHAT_PRESENCE_DEBOUNCE,
                   history_size=settings.CHAT_HISTORY_DEFAULT,
                   tracker_options={"batch_max": settings.CHAT_PRESENCE_BATCH_MAX})
        _loops[:] = [
            gevent.spawn(_hub.maintain, settings.CHAT_PRESENCE_HEARTBEAT),
            gevent.spawn(_hub.check, settings.CHAT_CURSOR_CHECK_INTERVAL),
        ]
        authority()  # control events (revocation, tallies) may arrive from now on
    return _hub


def authority():
    """Return the worker's authority over its sockets (chat/authority.py), fed by the hub."""
    global _authority
    if _authority is None:
        hub_ = hub()
        _authority = Authority(settings.CHAT_SOCKETS_PER_USER,
                               publish=lambda event: hub_.publish(CONTROL, event),
                               revalidate_interval=settings.CHAT_REVALIDATE_INTERVAL,
                               room_readers=rooms.readers)
        _authority.rooms_of = lambda slug: list(getattr(hub_.rooms.get(slug), "sessions", ()))
        hub_.on_control = _on_control
        hub_.user_sessions = lambda user_id: _authority.by_user.get(user_id, ())
        _loops.append(gevent.spawn(_authority.run_backstop))
    return _authority


def _on_control(event):
    sign_ins().apply(event)  # first: a handshake must not take a revoked session from memory
    _authority.apply(event)


def current_hub():
    """Return the hub if this process built one, else None (never builds it)."""
    return _hub


def sign_ins():
    """Return the worker's batched session look-ups for handshakes (chat/handshake.py)."""
    global _sign_ins
    if _sign_ins is None:
        _sign_ins = SignIns(ttl=settings.CHAT_SESSION_CACHE_TTL)
    return _sign_ins


def streams():
    """Return the worker's HTTP long-poll streams by client id (chat/longpoll.py)."""
    global _streams
    if _streams is None:
        _streams = Streams()
    return _streams


def limiter():
    """Return the per-user rate limiter for ``send`` and ``typing``."""
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter(settings.CHAT_RATE_LIMIT, settings.CHAT_RATE_BURST)
    return _limiter


def reset():
    """Forget the singletons (stopping the broker and the loops), so the next use builds them anew."""
    global _hub, _limiter, _authority, _sign_ins, _streams
    if _hub is not None:
        gevent.killall(_loops, block=False)
        _loops.clear()
        _hub.stop()
    _hub = _limiter = _authority = _sign_ins = _streams = None
