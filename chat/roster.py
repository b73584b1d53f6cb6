"""Who is present in one room, anywhere, as this worker knows it: no read per join.

Read once from ``chat_presence`` when the worker starts holding the room, then kept up by
the ``presence`` events every worker's hub receives for its rooms, and read again at each
presence heartbeat (a lost or reordered event heals within ``CHAT_PRESENCE_HEARTBEAT``).
Events that arrive during a read are applied again after it: the read may predate them.
A ``left`` for a user this worker still holds sockets of is ignored (a stale event).
"""
import bisect

from gevent.lock import Semaphore


class Roster:
    """A room's present usernames, sorted, loaded by ``load(read)`` before first use."""

    def __init__(self, slug, holds):
        self.slug = slug
        self.holds = holds  # (username) -> whether this worker holds sockets of theirs here
        self.names = []  # sorted
        self.loaded = False
        self.pending = None  # [(joined, left)] that arrived during a read
        self.lock = Semaphore()

    def __len__(self):
        return len(self.names)

    def load(self, read):
        """Read the room's names with ``read()`` unless loaded (the heartbeat reads again)."""
        with self.lock:
            if self.loaded:
                return
            self.begin()
            try:
                names = read()
            except BaseException:
                self.pending = None
                raise
            self.finish(names)

    def begin(self):
        """Start a read: the events arriving until ``finish`` are applied again after it."""
        self.pending = []

    def finish(self, names):
        """End a read that found ``names`` present (``begin`` came first)."""
        pending, self.pending = self.pending or [], None
        names = set(names) | {name for name in self.names if self.holds(name)}
        self.names = sorted(names)
        for joined, left in pending:
            self._apply(joined, left)
        self.loaded = True

    def apply(self, joined, left):
        """Apply a ``presence`` event (ignored before the first read begins)."""
        if self.pending is not None:
            self.pending.append((joined, left))
        if self.loaded:
            self._apply(joined, left)

    def add(self, name):
        """Count ``name`` present (a user who just arrived through this worker)."""
        at = bisect.bisect_left(self.names, name)
        if at == len(self.names) or self.names[at] != name:
            self.names.insert(at, name)

    def page(self, after=None, limit=100):
        """Return up to ``limit`` names sorted after ``after`` (None: from the first), and more."""
        start = 0 if after is None else bisect.bisect_right(self.names, after)
        names = self.names[start:start + limit]
        return names, start + limit < len(self.names)

    def _apply(self, joined, left):
        for name in joined:
            if isinstance(name, str):
                self.add(name)
        for name in left:
            if isinstance(name, str) and not self.holds(name):
                at = bisect.bisect_left(self.names, name)
                if at < len(self.names) and self.names[at] == name:
                    del self.names[at]
