"""One room's seq cursor in one worker: hand messages on in seq order, once, and fill gaps.

Messages arrive from the broker out of order, twice, or not at all. The cursor hands each seq
on once, in order, holding early ones back. Whatever is missing is read from the database by
one reader greenlet, through one read path (``_read``), whatever asked for it:

- a gap: held seqs wait ``gap_wait`` seconds for the missing ones to arrive live;
- ``want(seq)``: a seq known to be committed (an event sent by reference, the worker's check
  against ``Room.last_seq``, a resync after the broker reconnected);

Every seq handed on, live or read, leaves what is held at once: a seq that arrives live while
the reader reads it must not stay held (issue 13: the room re-read an empty range every
``gap_wait`` forever and its next real gap was never repaired).
"""
import logging

import gevent

from chat.protocol import encode

logger = logging.getLogger(__name__)

#: ``want(NEWEST)``: read whatever the database holds after the cursor.
NEWEST = float("inf")


class Cursor:
    """Hand one room's messages to ``deliver(seq, body, published)`` in seq order, once.

    A body is an event's encoded JSON (the room builds its frame, and keeps the body for the
    joins it serves from memory). ``fetch(room_id, slug, after, upto)`` returns
    ``[(seq, event or None)]`` for every seq in ``after < seq <= upto`` (``upto`` None: up to
    the newest), a deleted message as None. ``deliver`` gets body None for a deleted message
    (its seq is passed over).
    """

    def __init__(self, slug, fetch, deliver, gap_wait=0.5, max_delay=5.0):
        self.slug = slug
        self.fetch = fetch
        self.deliver = deliver
        self.gap_wait = gap_wait
        self.max_delay = max_delay  # longest wait between failed reads
        self.room_id = None
        self.next_seq = None  # the seq to hand on next; None until a join read the room
        self.held = {}  # seq -> (body, publish time): arrived before the seqs ahead of it
        self.wanted = 0  # the highest seq known to be committed and not handed on (NEWEST: all)
        self.urgent = False  # read without waiting for live arrivals first
        self.reader = None
        self.reading = False  # inside fetch: killing the reader now would break a connection
        self.closed = False

    @property
    def started(self):
        return self.next_seq is not None

    def start_at(self, room_id, seq):
        """Begin handing on after ``seq`` unless already begun; return the cursor's seq."""
        self.room_id = room_id
        if self.next_seq is not None:
            return self.next_seq - 1
        self.next_seq = seq + 1
        self.held = {s: h for s, h in self.held.items() if s > seq}
        self._flush()  # to the sessions attached, which hold it until their ``joined``
        return seq

    def offer(self, seq, body, published=None):
        """Hand on ``body`` of ``seq`` now, or once the seqs before it were handed on."""
        if self.next_seq is not None and seq < self.next_seq:
            return  # already handed on (the broker's echo, a resend, or the database was faster)
        self.held[seq] = (body, published)
        self._flush()

    def want(self, upto=NEWEST, now=True):
        """Read the seqs up to ``upto`` (known to be committed) unless handed on meanwhile.

        ``now``: read at once (the seq will not arrive live); otherwise wait ``gap_wait``
        first, as it may be on its way. Tell whether the cursor was behind ``upto``.
        """
        if self.next_seq is not None and upto < self.next_seq:
            return False
        self.wanted = max(self.wanted, upto)
        self.urgent = self.urgent or now
        self._wake()
        return True

    def close(self):
        """Stop reading: the room has no sessions left in this worker."""
        self.closed = True
        if self.reader is not None and not self.reading:
            self.reader.kill(block=False)  # one not started yet never runs its finally
            self.reader = None

    def _flush(self):
        if self.next_seq is None:
            return
        while self.next_seq in self.held:
            self._hand_on(self.next_seq, *self.held[self.next_seq])
        self._wake()

    @property
    def position(self):
        """Return the last seq handed on (None before ``start_at``)."""
        return None if self.next_seq is None else self.next_seq - 1

    def _hand_on(self, seq, body, published=None):
        # The one way a seq leaves: whoever hands it on takes it out of what is held.
        self.held.pop(seq, None)
        self.next_seq = seq + 1
        self.deliver(seq, body, published)

    def _owed(self):
        """Return how far the database must be read (NEWEST: all of it), or None."""
        if self.next_seq is None:
            return None
        if self.wanted < self.next_seq:
            self.wanted = 0  # handed on, live or read
        upto = max(self.wanted, max(self.held, default=0) - 1)  # a gap ends below a held seq
        return upto if upto >= self.next_seq else None

    def _wake(self):
        if self.reader is None and not self.closed and self._owed() is not None:
            self.reader = gevent.spawn(self._read_loop)

    def _read_loop(self):
        """While seqs are owed: (for a gap, after ``gap_wait``) read them; retry with backoff."""
        failures = 0
        try:
            while not self.closed and self._owed() is not None:
                if not self.urgent:
                    gevent.sleep(self.gap_wait)  # a gap: the missing seqs may still arrive live
                upto = self._owed()
                if upto is None or self.closed:
                    return
                self.urgent = False
                if upto == NEWEST:
                    self.wanted = 0  # asked again during the read: read again after it
                if self._read(upto):
                    failures = 0
                    continue
                # Retried until it succeeds: after a broker reconnect this read is the only way
                # to what was published meanwhile (test_faults: a pooled connection the outage broke).
                self.wanted, self.urgent = max(self.wanted, upto), True
                failures += 1
                gevent.sleep(min(self.gap_wait * 2 ** failures, self.max_delay))
        finally:
            self.reader = None

    def _read(self, upto):
        """Hand on the seqs from the cursor up to ``upto`` from the database; False if it failed."""
        first, held_before = self.next_seq, set(self.held)
        logger.info("room %s: reading seqs %s-%s from the database", self.slug, first,
                    "" if upto == NEWEST else upto)
        self.reading = True
        try:
            found = self.fetch(self.room_id, self.slug, first - 1, None if upto == NEWEST else upto)
        except Exception:
            logger.exception("room %s: reading seqs from %s failed; will retry", self.slug, first)
            return False
        finally:
            self.reading = False
        for seq, event in found:
            if seq < self.next_seq:
                continue  # it arrived live during the read and was handed on then
            if seq > self.next_seq:
                logger.warning("room %s: the database skipped seq %s; reading again", self.slug,
                               self.next_seq)
                break
            held = self.held.get(seq)
            if held is not None:  # the live body, already encoded (and its latency observed)
                self._hand_on(seq, *held)
            else:
                self._hand_on(seq, None if event is None else encode(event))
        self._flush()  # what was held right after the seqs read
        if upto != NEWEST and self.next_seq <= upto:
            self._drop_uncommitted(upto, held_before)
        return True

    def _drop_uncommitted(self, upto, held_before):
        """Forget what asked for seqs the database does not have: they were never committed.

        A seq is published only after its commit, and seqs are gapless, so a seq held before a
        read that found the room ending below it did not come from this room's sequence (a
        forged NOTIFY, another deployment on a shared Redis): waiting for it would hold back
        every real message of the room on this worker.
        """
        reached = self.next_seq - 1
        bogus = sorted(s for s in held_before if s in self.held and s > reached)
        for seq in bogus:
            del self.held[seq]
        if self.wanted != NEWEST and self.wanted > reached:
            self.wanted = 0
        logger.warning("room %s: the database ends at seq %s, not %s; dropped %s seqs never "
                       "committed (up to %s)", self.slug, reached, upto, len(bogus),
                       bogus[-1] if bogus else upto)
