"""Read markers and unread counts: how far each user has read each room, kept on the server.

A marker only moves forward (the upsert keeps the greater seq), so tabs and devices that
report out of order never move it back. An unread count is the room's messages after the
marker that are neither the user's own nor deleted, counted up to ``CHAT_UNREAD_MAX`` (a
bounded index range per room, however far behind the user is).
"""
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import OuterRef, Subquery

from chat.db import db_work
from chat.models import ReadMarker

logger = logging.getLogger(__name__)

# Inserted, or moved forward: RETURNING yields a row only when the marker changed.
MARK_SQL = """
    INSERT INTO chat_readmarker (user_id, room_id, last_read)
    SELECT %(user)s, id, LEAST(%(seq)s, last_seq) FROM chat_room WHERE id = %(room)s
    ON CONFLICT (user_id, room_id) DO UPDATE SET last_read = EXCLUDED.last_read
    WHERE chat_readmarker.last_read < EXCLUDED.last_read
    RETURNING last_read"""

COUNT_SQL = """
    SELECT count(*) FROM (
        SELECT 1 FROM chat_message
        WHERE room_id = %(room)s AND seq > %(after)s AND NOT deleted AND user_id <> %(user)s
        LIMIT %(cap)s) AS unread"""

# The page's rooms in one statement: each room's capped count after its marker (or from 0).
COUNTS_SQL = """
    SELECT room.id, COALESCE(marker.last_read, 0), (
        SELECT count(*) FROM (
            SELECT 1 FROM chat_message AS message
            WHERE message.room_id = room.id AND message.seq > COALESCE(marker.last_read, 0)
              AND NOT message.deleted AND message.user_id <> %(user)s
            LIMIT %(cap)s) AS unread)
    FROM chat_room AS room
    LEFT JOIN chat_readmarker AS marker ON marker.room_id = room.id AND marker.user_id = %(user)s
    WHERE room.id = ANY(%(rooms)s)"""

# Mentions in messages up to the marker are seen: reading past them is seeing them.
SEEN_SQL = """
    UPDATE chat_mention SET seen = true
    WHERE user_id = %(user)s AND NOT seen
      AND message_id IN (SELECT id FROM chat_message WHERE room_id = %(room)s AND seq <= %(seq)s)"""

UNSEEN_SQL = "SELECT count(*) FROM chat_mention WHERE user_id = %(user)s AND NOT seen"


@dataclass
class ReadState:
    """A user's marker in a room after a ``read``, and what it leaves unread."""

    read: int
    count: int
    more: bool  # the count stopped at CHAT_UNREAD_MAX
    moved: bool  # the marker changed (False: a lower or equal seq, nothing changed)
    mentions: int  # the user's unseen mentions, all rooms


def mark(user, room_id, seq):
    """Move ``user``'s marker in the room to ``seq`` (never back, never past the room's last seq)."""
    params = {"user": user.pk, "room": room_id, "seq": seq, "cap": settings.CHAT_UNREAD_MAX}
    with db_work(), connection.cursor() as cursor:
        cursor.execute(MARK_SQL, params)
        row = cursor.fetchone()
        moved = row is not None
        if moved:
            params["seq"] = row[0]
            cursor.execute(SEEN_SQL, params)
        else:
            params["seq"] = (ReadMarker.objects.filter(user=user, room_id=room_id)
                             .values_list("last_read", flat=True).first() or 0)
        cursor.execute(COUNT_SQL, {**params, "after": params["seq"]})
        count = cursor.fetchone()[0]
        cursor.execute(UNSEEN_SQL, params)
        mentions = cursor.fetchone()[0]
    return ReadState(params["seq"], count, count >= settings.CHAT_UNREAD_MAX, moved, mentions)


def with_unread(user, rooms):
    """Give each of ``rooms`` ``unread`` (capped), ``unread_more`` and ``last_read``, in one query."""
    if not rooms:
        return rooms
    cap = settings.CHAT_UNREAD_MAX
    with connection.cursor() as cursor:
        cursor.execute(COUNTS_SQL, {"user": user.pk, "cap": cap, "rooms": [r.pk for r in rooms]})
        found = {room_id: (last_read, count) for room_id, last_read, count in cursor.fetchall()}
    for room in rooms:
        room.last_read, room.unread = found.get(room.pk, (0, 0))
        room.unread_more = room.unread >= cap
    return rooms


def with_marker(rooms, user):
    """Annotate a queryset of rooms with ``user``'s marker (``marker``, None if never read)."""
    return rooms.annotate(marker=Subquery(ReadMarker.objects.filter(
        user_id=user.pk, room_id=OuterRef("pk")).values("last_read")[:1]))


def last_read(user, room):
    """The seq ``user`` has read ``room`` up to, or 0 if they never opened it (page requests).

    No query for a room read ``with_marker``.
    """
    if hasattr(room, "marker"):
        return room.marker or 0
    return (ReadMarker.objects.filter(user=user, room=room)
            .values_list("last_read", flat=True).first() or 0)


def unread_event(slug, state, ref=None):
    """Build ``unread``: the user's marker and unread count in room ``slug``, and unseen mentions."""
    fields = {"room": slug, "read": state.read, "count": state.count}
    if state.more:
        fields["more"] = True
    fields["mentions"] = state.mentions
    return {"type": "unread", **fields, **({"ref": ref} if ref is not None else {})}
