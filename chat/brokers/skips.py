"""Skip what a listener cannot deliver, and say so without flooding the log.

A payload nobody can parse (``NOTIFY chat_events, 'x'`` from psql, a header from another
version during a rolling deploy) or an error of the hub's must not end a listen loop, nor
write one line per payload: a flood of garbage would become a flood of log lines. The first
skip of each kind is logged with its reason; later ones are counted, and the counts are
logged once ``every`` seconds have passed (checked on each skip and on each ``flush``).
"""
import logging
import time
from collections import Counter

#: Kinds of skips whose first occurrence is logged with a traceback (a bug, not bad input).
WITH_TRACEBACK = {"hub error", "error"}


class SkipLog:
    """Log the first skip of each (kind, error type); count the rest, one line per period."""

    def __init__(self, logger, every=60.0, clock=time.monotonic):
        self.logger = logger
        self.every = every
        self.clock = clock
        self.seen = set()  # (kind, error type) already logged once: bounded by the code's types
        self.counts = Counter()  # (kind, error type) -> skips since the last count line
        self.counting_since = None

    def skip(self, kind, topic, error, sample=None):
        """Record one skipped payload on ``topic`` because of ``error``; never raises."""
        key = (kind, type(error).__name__)
        if key in self.seen:
            self.counts[key] += 1
            if self.counting_since is None:
                self.counting_since = self.clock()
        else:
            self.seen.add(key)
            level = logging.ERROR if kind in WITH_TRACEBACK else logging.WARNING
            self.logger.log(level, "skipped a %s on %s (%s: %s)%s; more like it are counted every %s s",
                            kind, topic, key[1], _reason(error), _sample(sample), self.every,
                            exc_info=error if kind in WITH_TRACEBACK else None)
        self.flush()

    def flush(self):
        """Log the counts if ``every`` seconds have passed since counting began."""
        if self.counting_since is None:
            return
        elapsed = self.clock() - self.counting_since
        if elapsed < self.every:
            return
        summary = ", ".join(f"{n} x {kind} ({name})" for (kind, name), n in sorted(self.counts.items()))
        self.logger.warning("skipped %s in the last %s s", summary, round(elapsed))
        self.counts.clear()
        self.counting_since = None


def _reason(error):
    return str(error).strip()[:200] or "no detail"


def _sample(sample):
    """The start of the payload, for the first line of its kind: enough to find its sender."""
    if sample is None:
        return ""
    return f": {sample[:80]!r}{'...' if len(sample) > 80 else ''}"
