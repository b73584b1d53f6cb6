"""The in-process broker: one worker, or tests. Delivers synchronously, in publish order."""
from chat.brokers.base import Broker


class MemoryBroker(Broker):
    """Hand each payload straight to this process's hub."""

    def __init__(self, max_bytes=None):
        super().__init__(max_bytes)
        self._on_message = None

    def start(self, on_message, on_reconnect=None):
        self._on_message = on_message

    def _send(self, topic, payload):
        if self._on_message is not None:
            self._on_message(topic, payload)

    def stop(self):
        self._on_message = None
