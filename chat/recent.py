"""A room's newest messages in this worker's memory, so that a join needs no message read.

The ring is filled once from the database (a join's snapshot, at the cursor's position) and
then extended by the room's cursor as it hands each seq on, in seq order. It holds the
encoded ``message`` events (the bytes that go into ``joined.messages`` as they are).

It serves a join only when it can give exactly what the database would: every shown
message above ``floor`` is in it, and ``older`` says whether shown messages exist at or
below ``floor`` (None: not known). A deleted message (``message_deleted``, or a seq the
cursor passes over) is removed and never added again; a resync forgets the whole ring.
"""
from collections import deque

#: Deleted seqs remembered while the ring is empty (a fill may still hold them).
TOMBSTONES_MAX = 1000


class Recent:
    """The newest ``size`` shown messages of one room, as ``(seq, body)`` oldest first."""

    def __init__(self, size):
        self.size = size
        self.items = deque()
        self.floor = None  # None: not filled, nothing is served
        self.older = None
        self.deleted = set()  # seqs announced deleted: never added

    @property
    def filled(self):
        return self.floor is not None

    def fill(self, items, floor, older):
        """Start from ``items`` (every shown message above ``floor``), oldest first."""
        self.items = deque((seq, body) for seq, body in items if seq not in self.deleted)
        self.floor, self.older = floor, older
        self._trim()

    def add(self, seq, body):
        """Append the message the cursor handed on (body None: deleted, passed over)."""
        if self.floor is None or body is None or seq in self.deleted:
            return
        self.items.append((seq, body))
        self._trim()

    def remove(self, seq):
        """Forget a deleted message, now and if it comes again (a fill read before the delete)."""
        self.deleted.add(seq)
        if len(self.deleted) > TOMBSTONES_MAX:
            self.deleted.discard(min(self.deleted))
        if any(s == seq for s, _ in self.items):
            self.items = deque(item for item in self.items if item[0] != seq)

    def forget(self):
        """Serve nothing until filled again (the broker may have lost events)."""
        self.items.clear()
        self.floor = self.older = None

    def page(self, since, cap):
        """Return ``(bodies, more)`` as the database would give them, or None if it can't.

        ``since`` None: the newest ``size`` messages; else those above it, at most ``cap``.
        """
        if self.floor is None:
            return None
        if since is None:
            if self.older is None or (self.older and len(self.items) < self.size):
                return None  # a deletion left a hole that only the database can fill
            return [body for _, body in self.items], self.older
        if since < self.floor:
            return None
        bodies = [body for seq, body in self.items if seq > since]
        if len(bodies) > cap:
            return bodies[-cap:], True
        return bodies, False

    def _trim(self):
        trimmed = False
        while len(self.items) > self.size:
            self.floor = self.items.popleft()[0]
            self.older = trimmed = True
        if trimmed and self.deleted:  # seqs at or below the floor are never served again
            self.deleted = {seq for seq in self.deleted if seq > self.floor}
