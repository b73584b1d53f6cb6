"""The worker's singletons, wired in one visible place: the hub (with its broker) and the limiter.

Built on first use, in the worker after the fork; tests may ``reset()`` them.
"""
from django.conf import settings

import gevent

from chat import brokers, rooms
from chat.db import db_work
from chat.hub import Hub
from chat.models import Room
from chat.presence import DatabasePresence
from chat.ratelimit import RateLimiter

_hub = None
_loops = []  # the hub's periodic greenlets
_limiter = None


def hub():
    """Return the worker's hub, on the broker named by ``CHAT_BROKER``, keeping presence up.

    Its loops: presence upkeep every ``CHAT_PRESENCE_HEARTBEAT`` seconds, and the check of
    every room's cursor against ``Room.last_seq`` every ``CHAT_CURSOR_CHECK_INTERVAL``.
    """
    global _hub
    if _hub is None:
        _hub = Hub(brokers.from_settings(), fetch=rooms.messages_between,
                   presence_store=DatabasePresence(ttl=settings.CHAT_PRESENCE_TTL),
                   gap_wait=settings.CHAT_GAP_WAIT, last_seqs=last_seqs,
                   presence_debounce=getattr(settings, "CHAT_PRESENCE_DEBOUNCE", 2.0))
        _loops[:] = [
            gevent.spawn(_hub.maintain, settings.CHAT_PRESENCE_HEARTBEAT),
            gevent.spawn(_hub.check, getattr(settings, "CHAT_CURSOR_CHECK_INTERVAL", 3.0)),
        ]
    return _hub


def last_seqs(room_ids):
    """Return ``{room_id: last_seq}`` for ``room_ids``, in one query."""
    with db_work():
        return dict(Room.objects.filter(id__in=room_ids).order_by().values_list("id", "last_seq"))


def current_hub():
    """Return the hub if this process built one, else None (never builds it)."""
    return _hub


def limiter():
    """Return the per-user rate limiter for ``send`` and ``typing``."""
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter(settings.CHAT_RATE_LIMIT, settings.CHAT_RATE_BURST)
    return _limiter


def reset():
    """Forget the singletons (stopping the broker and the loops), so the next use builds them anew."""
    global _hub, _limiter
    if _hub is not None:
        gevent.killall(_loops, block=False)
        _loops.clear()
        _hub.stop()
    _hub = _limiter = None
