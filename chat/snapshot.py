"""What a joining socket sees first: the room's newest messages, from memory when it can.

The socket subscribed to the room before this runs, so whatever the cursor hands on from
here is held for it until ``joined``. A room this worker already holds answers from its ring
(chat/recent.py) at the cursor's position, with no query for a public room and one
membership check for a private one; otherwise the database is read as it always was, the
messages the cursor handed on meanwhile are added, and the ring is filled from the result.
"""
from django.conf import settings

from chat import edits, metrics, rooms
from chat.protocol import encode


def take(room, user, slug, since, changes_since=None):
    """Return ``(room_id, seq, bodies, more, fields)`` for ``user`` joining ``slug``.

    ``room``: the hub's. ``fields``: what ``joined`` says of edits and deletions (``change``,
    and ``changes`` and ``changes_more`` for a resume with ``changes_since``, ``deleted``).
    """
    served = _from_memory(room, user, slug, since, changes_since)
    if served is not None:
        metrics.JOINS_FROM_MEMORY.inc()
        return served
    return _from_database(room, user, slug, since, changes_since)


def _from_memory(room, user, slug, since, changes_since):
    access = room.access
    if access is None or not room.cursor.started or not room.change_known:
        return None
    room_id, private = access
    if private:
        if not rooms.admits(user, room_id):
            return None  # the database path says why (forbidden, or the room is gone)
        if room.access is None:
            return None  # the room changed during the check
    seq = room.cursor.position
    page = room.recent.page(since, settings.CHAT_JOIN_MAX_MESSAGES, seq)
    if page is None:
        return None
    bodies, more, deleted = page
    change = room.change  # every later change reaches the socket live: it subscribed first
    fields = _fields(room_id, slug, since, changes_since, change, deleted)
    return room_id, seq, bodies, more, fields


def _from_database(room, user, slug, since, changes_since):
    epoch, change_epoch = room.access_epoch, room.change_epoch
    snapshot = rooms.open_room(user, slug, since)
    change = edits.last_change(snapshot.room_id)
    messages = [(m["seq"], m) for m in snapshot.messages]
    seq = snapshot.seq
    cursor = room.cursor.start_at(snapshot.room_id, seq)
    if cursor > seq:
        # This worker already handed on seqs the snapshot did not see: send them too.
        caught_up = rooms.messages_between(snapshot.room_id, slug, seq, cursor)
        messages += [(s, e) for s, e in caught_up if e and s > (since or 0)]
        seq = cursor
    floor, older = _coverage(messages, since, seq, snapshot.more)
    edited, deleted = edits.marks(snapshot.room_id, floor, seq)
    edits.mark([m for _, m in messages], edited)
    items = [(s, encode(m)) for s, m in messages]
    if room.access_epoch == epoch:  # no control event said the room changed meanwhile
        room.access = (snapshot.room_id, snapshot.private)
    room.knew_change(change, change_epoch)
    if room.cursor.position == seq:  # the ring starts where the cursor hands on from
        room.recent.fill(items, floor, older, deleted)
    fields = _fields(snapshot.room_id, slug, since, changes_since, change, deleted)
    return snapshot.room_id, seq, [body for _, body in items], snapshot.more, fields


def _fields(room_id, slug, since, changes_since, change, deleted):
    """Build ``joined``'s change fields; read the changes a resume missed, if any.

    ``change`` and ``changes`` only for a join that asked (``changes_since``): a version 1
    client sees nothing new but ``deleted``.
    """
    fields = {}
    if changes_since is not None:
        fields["change"] = change
    if changes_since is not None and since is not None:
        found, more = [], False
        if changes_since < change:
            found, more = edits.changes(room_id, slug, since, changes_since,
                                        settings.CHAT_JOIN_MAX_CHANGES)
        fields["change"] = max([change, *(event["change"] for event in found)])
        fields["changes"] = found
        if more:
            fields["changes_more"] = True
    if deleted:
        fields["deleted"] = deleted
    return fields


def _coverage(items, since, seq, more):
    """Return ``(floor, older)`` of what a snapshot shows: see chat/recent.py."""
    if more:  # shown messages exist below the first one returned
        return items[0][0] - 1, True
    if since is None:
        return 0, False
    floor = min(since, seq)
    return floor, (False if floor == 0 else None)
