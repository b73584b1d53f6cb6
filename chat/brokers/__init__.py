"""Brokers carry events between the hubs of all workers (and hosts). See ``base.Broker``."""
from django.conf import settings
from django.utils.module_loading import import_string


def from_settings():
    """Build the broker named by ``CHAT_BROKER`` (a dotted path to a ``Broker`` class)."""
    return import_string(settings.CHAT_BROKER)()
