"""Handshake admission: a worker sets up new WebSockets at a bounded rate, the excess waits outside.

After a deploy every client of the old worker comes back within seconds. Set up all at once,
their handshakes would queue inside the worker (each holding a greenlet, a socket and a Django
request) while the database saturates and pages crawl. So the worker's handler asks
:class:`Admission` *before* it sends the 101: at most ``CHAT_HANDSHAKE_RATE`` handshakes a
second (bursts of ``CHAT_HANDSHAKE_BURST``) and at most ``CHAT_HANDSHAKES_IN_FLIGHT`` being
set up: from the upgrade until the socket's first ``joined`` (at most ``CHAT_HANDSHAKE_TIMEOUT``
seconds), since the join is what costs the database. The excess gets HTTP 503 with a jittered
``Retry-After``, so the queue forms in the clients. A draining worker (chat/shutdown.py) refuses
every handshake: the client should reconnect to its replacement. Pages are never refused here.
"""
import logging
import math
import random
import time

from chat.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

#: The environ key holding the release callback of an admitted handshake.
TICKET_KEY = "chat.admission.release"
#: Seconds over which the recent refusals are counted (they size the Retry-After spread).
PRESSURE_WINDOW = 1.0


class Admission:
    """Admit handshakes at ``rate`` a second (``burst`` at once), ``in_flight`` at a time."""

    def __init__(self, rate, burst, in_flight, max_retry_after=10, clock=time.monotonic,
                 rand=random.random):
        self.bucket = TokenBucket(rate, burst, clock)
        self.rate, self.limit, self.max_retry_after = rate, in_flight, max_retry_after
        self.clock, self.rand = clock, rand
        self.in_flight = 0
        self.draining = False
        self.refused = 0  # handshakes answered 503, ever (logged once in a while)
        self._pressure, self._pressure_at = 0.0, clock()

    def enter(self):
        """Take a slot; return a release callable, or the Retry-After (seconds) of a refusal."""
        if self.draining:
            return self._refuse(spread=1.0)
        if self.in_flight >= self.limit or not self.bucket.take():
            # Spread the refused over the seconds the rate needs to take them all back.
            return self._refuse(spread=self._note_refusal() / self.rate)
        self.in_flight += 1
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1

        return release

    def _note_refusal(self):
        now = self.clock()
        self._pressure *= math.exp(-(now - self._pressure_at) / PRESSURE_WINDOW)
        self._pressure_at = now
        self._pressure += 1
        return self._pressure

    def _refuse(self, spread):
        self.refused += 1
        if self.refused % 1000 == 1:
            logger.info("handshakes refused with 503: %s so far (in flight %s, draining %s)",
                        self.refused, self.in_flight, self.draining)
        wait = 1 + self.rand() * min(self.max_retry_after - 1, spread)
        return max(1, math.ceil(wait))


_current = None


def current():
    """Return this worker's admission, built from the settings on first use."""
    global _current
    if _current is None:
        from django.conf import settings  # not at import: the master imports chat.worker

        _current = Admission(settings.CHAT_HANDSHAKE_RATE, settings.CHAT_HANDSHAKE_BURST,
                             settings.CHAT_HANDSHAKES_IN_FLIGHT, settings.CHAT_RETRY_AFTER_MAX)
    return _current


def take_ticket(environ):
    """Return the release callable of this handshake's slot (None if it has none), for the
    socket session to call once it is set up."""
    return environ.pop(TICKET_KEY, None)
