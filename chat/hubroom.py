"""One room as a worker's hub holds it: its local sessions, cursor, recent messages and roster.

A room lives while this worker has sessions in it. What it remembers (the ring of recent
messages, who is present, whether the room is public) saves a join its database reads; each
piece is dropped when it may be stale: the ring and the access on a resync, the access on a
``room`` control event (the room made private, or deleted).
"""
import time

from chat import metrics
from chat.cursor import Cursor
from chat.recent import Recent
from chat.roster import Roster
from chat.wsmends import encode_frame

DELETED_PREFIX = b'{"type":"message_deleted"'
EDITED_PREFIX = b'{"type":"message_edited"'
PRESENCE_PREFIX = b'{"type":"presence"'


class Room:
    """One room as this worker sees it: its local sessions and its cursor."""

    def __init__(self, slug, fetch, gap_wait, history_size=50, holds=lambda slug, user: False):
        self.slug = slug
        self.sessions = set()
        self.present = set()  # sessions counted by the presence tracker
        self.cursor = Cursor(slug, fetch, self.hand_on, gap_wait)
        self.recent = Recent(history_size)
        self.roster = Roster(slug, lambda user: holds(slug, user))
        self.access = None  # (room_id, private) once a join read the room
        self.access_epoch = 0  # bumped when the access may have changed
        # The room's change seq (chat/edits.py): the highest seen, in a read or an event;
        # ``change_known`` once a read since the last resync (events may have been lost).
        self.change = 0
        self.change_known = False
        self.change_epoch = 0  # bumped when what events told may be incomplete

    def hand_on(self, seq, body, published=None):
        """Queue the message ``seq``'s frame for every member (None: deleted, nothing to send)."""
        if body is not None:
            body = self.recent.patched(seq, body)  # edited while the cursor held it
        self.recent.add(seq, body)
        if body is None:
            return
        frame = encode_frame(body)  # once, for every recipient
        queued = 0
        for session in list(self.sessions):
            if session.deliver(self.slug, seq, frame):
                queued += 1
        if queued:  # one update per message, not per recipient: this loop is the hot path
            metrics.MESSAGES_DELIVERED.inc(queued)
        if published is not None:
            # Clocks of two hosts may disagree by a little: never a negative latency.
            metrics.BROADCAST_LATENCY.observe(max(0.0, time.time() - published))

    def broadcast(self, frame, skip_user=None):
        """Hand ``frame`` (an event without seq) to every member but ``skip_user``'s sockets."""
        for session in list(self.sessions):
            if skip_user is None or session.username != skip_user:
                session.deliver(self.slug, None, frame)

    def note(self, body, event):
        """Learn from an event without seq: a deletion leaves the ring, an edit changes it,
        presence the roster.

        ``event`` parses ``body`` (called only for the kinds that matter here).
        """
        if body.startswith(DELETED_PREFIX):
            parsed = event()
            seq = parsed.get("seq")
            if type(seq) is int:
                self.recent.remove(seq)
            self.saw_change(parsed.get("change"))
        elif body.startswith(EDITED_PREFIX):
            parsed = event()
            seq, change = parsed.get("seq"), parsed.get("change")
            text, edited = parsed.get("body"), parsed.get("edited")
            if (type(seq) is int and type(change) is int and isinstance(text, str)
                    and isinstance(edited, str)):
                self.recent.edit(seq, change, edited, text)
                self.saw_change(change)
        elif body.startswith(PRESENCE_PREFIX):
            parsed = event()
            joined, left = parsed.get("joined"), parsed.get("left")
            self.roster.apply(joined if isinstance(joined, list) else [],
                              left if isinstance(left, list) else [])

    def saw_change(self, change):
        """Note a change seq from an event (an old deletion from the admin has none)."""
        if type(change) is int and change > self.change:
            self.change = change

    def knew_change(self, change, epoch):
        """Note the change seq a read found, if no resync came since ``epoch`` (before the read)."""
        self.saw_change(change)
        if epoch == self.change_epoch:
            self.change_known = True

    def revoke_access(self):
        """Forget that the room is public (it may not be any more): the next join reads it."""
        self.access = None
        self.access_epoch += 1

    def forget(self):
        """Forget what events may have been lost for (after the broker reconnected)."""
        self.recent.forget()
        self.revoke_access()
        self.change_known = False
        self.change_epoch += 1
