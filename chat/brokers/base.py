"""The broker interface the hub publishes through, and the one listen loop of every broker.

``Broker.publish`` refuses an event over ``CHAT_EVENT_MAX_BYTES`` for every broker and every
caller (the hub, ``chat.publish``): an event is delivered whole or not at all, never cut.

``ListeningBroker`` owns the rules of listening, so that PostgreSQL and Redis keep the same
ones: a broker subclass only subscribes (``_subscribe``), receives (``_receive``), closes
(``_close``) and sends (``_send``). The loop skips a payload it cannot deliver and logs that
once per kind (chat/brokers/skips.py); an error of the hub's never ends it; a lost or failed
subscription is retried with backoff, and the backoff is not reset by a subscription that
drops again at once (a flapping server is not hammered); one log line per change of state.
"""
import logging
import time
from abc import ABC, abstractmethod

import gevent
import gevent.event
from django.conf import settings

from chat.brokers.skips import SkipLog
from chat.errors import EventTooLarge

RETRY_DELAYS = (0.1, 0.5, 1, 2, 5)  # seconds before each retry to subscribe


def max_event_bytes():
    """Return ``CHAT_EVENT_MAX_BYTES``, by default 1 MiB."""
    return settings.CHAT_EVENT_MAX_BYTES


class Broker(ABC):
    """Fan-out of opaque payloads to every subscribed hub, this process's included.

    Delivery may be at most once (a listener that reconnects misses what was published
    meanwhile): the hub repairs seq gaps from the database, so a broker need not be reliable,
    only fast. ``on_message`` must not block: it runs in the broker's delivery greenlet.
    """

    def __init__(self, max_bytes=None):
        self.max_bytes = max_event_bytes() if max_bytes is None else max_bytes

    @abstractmethod
    def start(self, on_message, on_reconnect=None):
        """Deliver every published ``(topic, payload)`` to ``on_message``.

        Call ``on_reconnect()`` after a lost subscription is back: events published meanwhile
        may be lost, and the hub catches up from the database.
        """

    def publish(self, topic, payload):
        """Send ``payload`` (bytes) on ``topic`` (a room slug) to every subscriber, whole.

        Raises ``EventTooLarge`` when it is over ``max_bytes``.
        """
        if len(payload) > self.max_bytes:
            raise EventTooLarge(f"the event is {len(payload)} bytes, over the maximum of "
                                f"{self.max_bytes} bytes (CHAT_EVENT_MAX_BYTES)")
        self._send(topic, payload)

    @abstractmethod
    def _send(self, topic, payload):
        """Send a payload already checked against the maximum."""

    def stop(self):
        """Stop delivering and let go of connections."""


class ListeningBroker(Broker):
    """A broker fed by one listener greenlet per process, running ``_listen_forever``.

    ``target`` names what is listened to in the log (``chat_events``, ``chat:* at host``).
    Exceptions of ``lost_errors`` mean a lost connection and are logged as a line; any other
    exception is logged with its traceback; either way the loop subscribes again.
    """

    lost_errors = (OSError,)
    retry_delays = RETRY_DELAYS
    stable_after = RETRY_DELAYS[-1]  # seconds a subscription must last to reset the backoff

    def __init__(self, target, max_bytes=None, clock=time.monotonic, sleep=gevent.sleep,
                 count_every=60.0):
        super().__init__(max_bytes)
        self.target = target
        self.clock = clock
        self.sleep = sleep  # waits out the backoff (tests record it)
        self.log = logging.getLogger(type(self).__module__)  # the broker's own logger
        self.skips = SkipLog(self.log, count_every, clock)
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
    def _subscribe(self):
        """Connect and subscribe, confirmed by the server; return the subscription."""

    @abstractmethod
    def _receive(self, subscription):
        """Wait a while for what arrives; return the items (``_handle`` takes each).

        Check that the server is still there when it is quiet; raise when the
        subscription is lost.
        """

    @abstractmethod
    def _close(self, subscription):
        """Let go of the subscription's connection."""

    def _handle(self, item):
        """Deliver one received item: by default a ``(topic, payload)`` pair."""
        topic, payload = item
        self.deliver(topic, payload)

    def deliver(self, topic, payload):
        """Hand ``payload`` to the hub; skip it (logged once per kind) if the hub refuses it."""
        try:
            self.on_message(topic, payload)
        except ValueError as error:  # the hub could not parse it
            self.skips.skip("bad payload", topic, error, payload)
        except Exception as error:
            self.skips.skip("hub error", topic, error, payload)

    def _listen_forever(self):
        """Subscribe, deliver, and subscribe again after every loss, until killed."""
        attempt = 0  # attempts to subscribe since the backoff was last reset
        lost = False  # a subscription was lost or never made (for the log line)
        warned = False  # the current failure was logged (one line per change of state)
        while True:
            if attempt:
                self.sleep(self.retry_delays[min(attempt, len(self.retry_delays)) - 1])
            attempt += 1
            try:
                subscription = self._subscribe()
            except Exception as error:
                if not warned:
                    self._log_failure("cannot listen on %s (%s); retrying with backoff", error)
                    warned = True
                else:
                    self.log.debug("listening on %s failed again (%s)", self.target, _reason(error))
                lost = True
                continue
            subscribed_at = self.clock()
            try:
                self.connected.set()
                self.log.info("listening on %s%s", self.target,
                              " again; catching up from the database" if lost else "")
                if self.on_reconnect is not None:
                    # What was published before the subscription is in the database. The first
                    # time too: a room joined while the listener was connecting may have missed some.
                    gevent.spawn(self.on_reconnect)
                lost, warned = True, False
                self._deliver_from(subscription)
            except Exception as error:
                self._log_failure("lost the subscription to %s (%s); reconnecting", error)
                warned = True
                if self.clock() - subscribed_at >= self.stable_after:
                    attempt = 1  # it held a while: retry soon, then back off again
            finally:
                self.connected.clear()
                self._close_quietly(subscription)

    def _deliver_from(self, subscription):
        while True:
            for item in self._receive(subscription):
                self._take(item)
            self.skips.flush()

    def _take(self, item):
        try:
            self._handle(item)
        except Exception as error:  # the broker's own decoding: a payload it cannot read
            kind = "bad payload" if isinstance(error, ValueError) else "error"
            self.skips.skip(kind, self.target, error, _text(item))

    def _log_failure(self, message, error):
        if isinstance(error, self.lost_errors):
            self.log.warning(message, self.target, _reason(error))
        else:  # not a connection's failure: a bug, worth its traceback
            self.log.error(message, self.target, _reason(error), exc_info=error)

    def _close_quietly(self, subscription):
        try:
            self._close(subscription)
        except Exception as error:
            self.log.debug("closing the subscription to %s failed (%s)", self.target, _reason(error))


def _reason(error):
    return str(error).strip() or type(error).__name__


def _text(item):
    return item if isinstance(item, (str, bytes)) else repr(item)
