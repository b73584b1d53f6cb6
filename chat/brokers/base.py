"""The broker interface the hub publishes through and subscribes to."""
from abc import ABC, abstractmethod

import gevent
import gevent.event


class Broker(ABC):
    """Fan-out of opaque payloads to every subscribed hub, this process's included.

    Delivery may be at most once (a listener that reconnects misses what was published
    meanwhile): the hub repairs seq gaps from the database, so a broker need not be reliable,
    only fast. ``on_message`` must not block: it runs in the broker's delivery greenlet.
    """

    @abstractmethod
    def start(self, on_message, on_reconnect=None):
        """Deliver every published ``(topic, payload)`` to ``on_message``.

        Call ``on_reconnect()`` after a lost subscription is back: events published meanwhile
        may be lost, and the hub catches up from the database.
        """

    @abstractmethod
    def publish(self, topic, payload):
        """Send ``payload`` (bytes) on ``topic`` (a room slug) to every subscriber."""

    def stop(self):
        """Stop delivering and let go of connections."""


class ListeningBroker(Broker):
    """A broker fed by one listener greenlet per process (``_listen_forever``)."""

    def __init__(self):
        self.on_message = None
        self.on_reconnect = None
        self.listener = None
        self.connected = gevent.event.Event()  # set while subscribed (tests wait on it)

    def start(self, on_message, on_reconnect=None):
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.listener = gevent.spawn(self._listen_forever)

    def stop(self):
        if self.listener is not None:
            self.listener.kill(block=True, timeout=5)
            self.listener = None

    @abstractmethod
    def _listen_forever(self):
        """Subscribe, deliver, and resubscribe after every loss, until killed."""
