"""Brokers carry events between the hubs of all workers (and hosts). See ``base.Broker``."""
import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

BROKERS = {
    "memory": "chat.brokers.memory.MemoryBroker",
    "postgres": "chat.brokers.postgres.PostgresBroker",
}


def from_settings():
    """Build the broker named by ``CHAT_BROKER``: ``memory`` or ``postgres``."""
    name = settings.CHAT_BROKER
    if name == "memory":
        from chat.brokers.memory import MemoryBroker

        return MemoryBroker()
    if name == "postgres":
        from django.db import connections

        from chat.brokers.postgres import PostgresBroker

        _require_patches(name)
        params = connections["default"].get_connection_params()
        params["application_name"] = f"chat-listener:{os.getpid()}"
        return PostgresBroker(params)
    raise ImproperlyConfigured(f"CHAT_BROKER={name!r}: use one of {', '.join(BROKERS)}.")


def _require_patches(name):
    """Fail fast: an unpatched socket would block the worker on the broker's connection."""
    import sys

    patches = sys.modules.get("patches")
    if patches is None or not patches.is_applied():
        raise ImproperlyConfigured(f"The {name} broker needs gevent's patches: import patches first.")
