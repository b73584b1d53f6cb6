"""Token buckets: per user for ``send`` and ``typing`` (PROTOCOL.md: 10 a second, bursts of 20),
per socket for the frames that cost the database and for ``typing``; and a socket's budgets.
"""
import time
from dataclasses import dataclass

from django.conf import settings


class TokenBucket:
    """Allow ``rate`` actions a second on average and ``burst`` at once."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self):
        """Spend one token if there is one; tell whether the action may go ahead."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def idle(self):
        """Tell whether the bucket is full again (forgetting it changes nothing)."""
        return self.tokens + (self.clock() - self.updated) * self.rate >= self.burst


class RateLimiter:
    """One bucket per key (a user id), shared by that user's sockets in this worker."""

    PRUNE_ABOVE = 10_000

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets = {}

    def allow(self, key):
        """Spend one of ``key``'s tokens; tell whether the action may go ahead."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) > self.PRUNE_ABOVE:
                self.buckets = {k: b for k, b in self.buckets.items() if not b.idle()}
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, self.clock)
        return bucket.take()


@dataclass(frozen=True)
class Budgets:
    """What one socket may cost: its outbox and its frames that cost the database or others."""

    queue_frames: int = 1000
    queue_bytes: int = 4 * 1024 * 1024
    db_frame_rate: float = 5.0  # join, leave, history: a second, on average
    db_frame_burst: int = 20
    typing_rate: float = 1.0  # clients send one every 2 s or so
    typing_burst: int = 3

    @classmethod
    def from_settings(cls):
        return cls(queue_frames=settings.CHAT_SEND_QUEUE_SIZE,
                   queue_bytes=settings.CHAT_SEND_QUEUE_BYTES,
                   db_frame_rate=settings.CHAT_DB_FRAME_RATE,
                   db_frame_burst=settings.CHAT_DB_FRAME_BURST,
                   typing_rate=settings.CHAT_TYPING_RATE, typing_burst=settings.CHAT_TYPING_BURST)
