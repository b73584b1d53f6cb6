"""What a joining socket sees first: the room's newest messages, from memory when it can.

The socket subscribed to the room before this runs, so whatever the cursor hands on from
here is held for it until ``joined``. A room this worker already holds answers from its ring
(chat/recent.py) at the cursor's position, with no query for a public room and one
membership check for a private one; otherwise the database is read as it always was, the
messages the cursor handed on meanwhile are added, and the ring is filled from the result.
"""
from django.conf import settings

from chat import metrics, rooms
from chat.protocol import encode


def take(room, user, slug, since):
    """Return ``(room_id, seq, bodies, more)`` for ``user`` joining ``slug`` (``room``: the hub's)."""
    served = _from_memory(room, user, since)
    if served is not None:
        metrics.JOINS_FROM_MEMORY.inc()
        return served
    return _from_database(room, user, slug, since)


def _from_memory(room, user, since):
    access = room.access
    if access is None or not room.cursor.started:
        return None
    room_id, private = access
    if private:
        if not rooms.admits(user, room_id):
            return None  # the database path says why (forbidden, or the room is gone)
        if room.access is None:
            return None  # the room changed during the check
    page = room.recent.page(since, settings.CHAT_JOIN_MAX_MESSAGES)
    if page is None:
        return None
    bodies, more = page
    return room_id, room.cursor.position, bodies, more


def _from_database(room, user, slug, since):
    epoch = room.access_epoch
    snapshot = rooms.open_room(user, slug, since)
    items = [(m["seq"], encode(m)) for m in snapshot.messages]
    seq = snapshot.seq
    cursor = room.cursor.start_at(snapshot.room_id, seq)
    if cursor > seq:
        # This worker already handed on seqs the snapshot did not see: send them too.
        caught_up = rooms.messages_between(snapshot.room_id, slug, seq, cursor)
        items += [(s, encode(e)) for s, e in caught_up if e and s > (since or 0)]
        seq = cursor
    if room.access_epoch == epoch:  # no control event said the room changed meanwhile
        room.access = (snapshot.room_id, snapshot.private)
    if room.cursor.position == seq:  # the ring starts where the cursor hands on from
        room.recent.fill(items, *_coverage(items, since, seq, snapshot.more))
    return snapshot.room_id, seq, [body for _, body in items], snapshot.more


def _coverage(items, since, seq, more):
    """Return ``(floor, older)`` of what a snapshot shows: see chat/recent.py."""
    if more:  # shown messages exist below the first one returned
        return items[0][0] - 1, True
    if since is None:
        return 0, False
    floor = min(since, seq)
    return floor, (False if floor == 0 else None)
