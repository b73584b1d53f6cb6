"""Brokers carry events between the hubs of all workers (and hosts). See ``base.Broker``."""
import os
import re

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

BROKERS = {
    "memory": "chat.brokers.memory.MemoryBroker",
    "postgres": "chat.brokers.postgres.PostgresBroker",
    "redis": "chat.brokers.redis.RedisBroker",
}
# A PostgreSQL identifier (63 bytes at most) that is also safe in a Redis pattern (no * ? [).
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")


#: Connection options of DATABASES["default"] that the LISTEN connection gets too.
LISTEN_OPTIONS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                  "keepalives_count", "tcp_user_timeout")


def from_settings():
    """Build the broker named by ``CHAT_BROKER``: ``memory``, ``postgres`` or ``redis``."""
    name = settings.CHAT_BROKER
    channel = broker_channel()
    if name == "memory":
        from chat.brokers.memory import MemoryBroker

        return MemoryBroker()
    if name == "postgres":
        from django.db import connections

        from chat.brokers.postgres import CHANNEL, PostgresBroker

        _require_patches(name)
        if settings.CHAT_LISTEN_DATABASE_URL:  # PostgreSQL itself, where DATABASE_URL is PgBouncer
            options = settings.DATABASES["default"].get("OPTIONS", {})
            # The same connect timeout and keepalives: a half-open listener is noticed too.
            params = {"dsn": settings.CHAT_LISTEN_DATABASE_URL,
                      **{k: v for k, v in options.items() if k in LISTEN_OPTIONS}}
        else:
            params = connections["default"].get_connection_params()
        params["application_name"] = f"chat-listener:{os.getpid()}"
        return PostgresBroker(params, channel=channel or CHANNEL)
    if name == "redis":
        from chat.brokers.redis import RedisBroker

        _require_patches(name)
        if not settings.REDIS_URL:
            raise ImproperlyConfigured("CHAT_BROKER=redis needs REDIS_URL, e.g. redis://127.0.0.1:6379/0.")
        return RedisBroker(settings.REDIS_URL, channel=channel)
    raise ImproperlyConfigured(f"CHAT_BROKER={name!r}: use one of {', '.join(BROKERS)}.")


def broker_channel():
    """Return ``CHAT_BROKER_CHANNEL``, or None when unset (each broker's default)."""
    channel = settings.CHAT_BROKER_CHANNEL or None
    if channel is not None and not CHANNEL_NAME.fullmatch(channel):
        raise ImproperlyConfigured(
            f"CHAT_BROKER_CHANNEL={channel!r}: use 1 to 63 letters, digits, '_', '-' or '.'.")
    return channel


def _require_patches(name):
    """Fail fast: an unpatched socket would block the worker on the broker's connection."""
    import sys

    patches = sys.modules.get("patches")
    if patches is None or not patches.is_applied():
        raise ImproperlyConfigured(f"The {name} broker needs gevent's patches: import patches first.")
