"""A room's newest messages in this worker's memory, so that a join needs no message read.

The ring is filled once from the database (a join's snapshot, at the cursor's position) and
then extended by the room's cursor as it hands each seq on, in seq order. It holds the
encoded ``message`` events (the bytes that go into ``joined.messages`` as they are).

It serves a join only when it can give exactly what the database would: every shown
message above ``floor`` is in it, and ``older`` says whether shown messages exist at or
below ``floor`` (None: not known). A deleted message (``message_deleted``, or a seq the
cursor passes over) is removed and never added again; a resync forgets the whole ring.

The deleted seqs above ``floor`` are kept too (a join lists them, for placeholders), and so
are the latest edits (``message_edited``): applied to the ring, and to whatever comes in
later with an older body (a fill read before the edit, a message held back by the cursor).
"""
import json
from collections import deque

from chat.protocol import encode

#: Deleted seqs remembered (while the ring is empty a fill may still hold them); more forget
#: the ring, which could not list the deleted seqs in its range any more.
TOMBSTONES_MAX = 1000
#: Edits remembered for bodies that may still come in with their old text.
EDITS_MAX = 1000


class Recent:
    """The newest ``size`` shown messages of one room, as ``(seq, body)`` oldest first."""

    def __init__(self, size):
        self.size = size
        self.items = deque()
        self.floor = None  # None: not filled, nothing is served
        self.older = None
        self.deleted = set()  # seqs announced deleted: never added
        self.edits = {}  # seq -> (change, edited, body) of the latest edits, oldest first

    @property
    def filled(self):
        return self.floor is not None

    def fill(self, items, floor, older, deleted=()):
        """Start from ``items`` (every shown message above ``floor``), oldest first, and
        ``deleted``, every deleted seq above ``floor``."""
        if len(deleted) >= TOMBSTONES_MAX:
            return  # more than it could list: the database answers these joins
        for seq in deleted:
            self._tombstone(seq)
        self.items = deque((seq, self.patched(seq, body)) for seq, body in items
                           if seq not in self.deleted)
        self.floor, self.older = floor, older
        self._trim()

    def add(self, seq, body):
        """Append the message the cursor handed on (body None: deleted, passed over)."""
        if body is None:
            self._tombstone(seq)
            return
        if self.floor is None or seq in self.deleted:
            return
        self.items.append((seq, body))
        self._trim()

    def remove(self, seq):
        """Forget a deleted message, now and if it comes again (a fill read before the delete)."""
        self._tombstone(seq)
        if any(s == seq for s, _ in self.items):
            self.items = deque(item for item in self.items if item[0] != seq)

    def _tombstone(self, seq):
        self.deleted.add(seq)
        if len(self.deleted) > TOMBSTONES_MAX:
            oldest = min(self.deleted)
            self.deleted.discard(oldest)
            if self.floor is not None and oldest > self.floor:
                self.forget()  # a deleted seq in the ring's range is no longer known

    def edit(self, seq, change, edited, body):
        """Apply an edit (``message_edited``) to the ring and to what comes in later."""
        self.edits.pop(seq, None)
        self.edits[seq] = (change, edited, body)
        if len(self.edits) > EDITS_MAX:
            del self.edits[next(iter(self.edits))]
        self.items = deque((s, self.patched(s, b) if s == seq else b) for s, b in self.items)

    def patched(self, seq, body):
        """Return ``body`` (a ``message`` event's JSON) with the latest edit known for ``seq``."""
        latest = self.edits.get(seq)
        if latest is None:
            return body
        change, edited, text = latest
        message = json.loads(body)
        if message.get("change", 0) >= change:
            return body
        message.update(body=text, edited=edited, change=change)
        return encode(message)

    def forget(self):
        """Serve nothing until filled again (the broker may have lost events)."""
        self.items.clear()
        self.floor = self.older = None

    def page(self, since, cap, top):
        """Return ``(bodies, more, deleted)`` as the database would give them, or None.

        ``since`` None: the newest ``size`` messages; else those above it, at most ``cap``.
        ``deleted``: the deleted seqs up to ``top`` (the cursor's) in the range the page covers.
        """
        if self.floor is None:
            return None
        if since is None:
            if self.older is None or (self.older and len(self.items) < self.size):
                return None  # a deletion left a hole that only the database can fill
            items, more = list(self.items), self.older
        elif since < self.floor:
            return None
        else:
            items = [item for item in self.items if item[0] > since]
            more = len(items) > cap
            items = items[-cap:] if more else items
        lo = items[0][0] - 1 if more else (since or 0)
        deleted = sorted(seq for seq in self.deleted if lo < seq <= top)
        return [body for _, body in items], more, deleted

    def _trim(self):
        trimmed = False
        while len(self.items) > self.size:
            self.floor = self.items.popleft()[0]
            self.older = trimmed = True
        if trimmed and self.deleted:  # seqs at or below the floor are never served again
            self.deleted = {seq for seq in self.deleted if seq > self.floor}
