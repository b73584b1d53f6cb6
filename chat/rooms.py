"""What sockets do to rooms in the database: open, snapshot, post, history.

Every function here runs inside ``db_work()`` (chat/db.py), so that a worker's sockets never
hold more connections than its slots, and returns plain values for the socket layer.
"""
import logging
from collections import namedtuple
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Q

from chat.db import db_work
from chat.errors import Forbidden, UnknownRoom
from chat.models import Message, Room
from chat.protocol import message_event

logger = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """A room as a joining socket first sees it."""

    room_id: int
    seq: int
    messages: list
    more: bool
    private: bool = False


def open_room(user, slug, since=None):
    """Check that ``user`` may join ``slug`` and return its :class:`Snapshot`.

    Without ``since``: the newest messages; with it, the newest ones after it, up to a cap.
    Reading ``last_seq`` first makes the snapshot consistent: every seq up to it is committed,
    because a seq is taken and its message inserted in one transaction.
    """
    with db_work():
        room = Room.objects.filter(slug=slug).first()
        if room is None:
            raise UnknownRoom(f"there is no room {slug!r}")
        if not room.admits(user):
            raise Forbidden(f"{slug!r} is a private room; ask a member to add you")
        if since is None:
            messages, more = _page(Message.objects.shown().before(room, room.last_seq + 1),
                                   settings.CHAT_HISTORY_DEFAULT, slug)
        else:
            newest = Message.objects.shown().before(room, room.last_seq + 1).filter(seq__gt=since)
            messages, more = _page(newest, settings.CHAT_JOIN_MAX_MESSAGES, slug)
        return Snapshot(room.id, room.last_seq, messages, more, room.private)


def messages_between(room_id, slug, after, upto=None):
    """Return ``[(seq, event)]`` for ``after < seq <= upto`` (None: the newest), deleted as None.

    Deleted messages hold their seq: the caller advances past them without showing them.
    Seqs above the room's ``last_seq`` were never given out and are not returned.
    """
    with db_work():
        # Never past Room.last_seq: a seq the room never gave out is not a deleted message (a
        # forged or foreign broker payload once had 200,000 seqs "passed over" on the hub).
        last_seq = Room.objects.filter(id=room_id).values_list("last_seq", flat=True).first() or 0
        upto = last_seq if upto is None else min(upto, last_seq)
        rows = Message.objects.after(room_id, after).filter(seq__lte=upto)
        found = {row.seq: row for row in _rows(rows)}
    return [(seq, None if seq not in found or found[seq].deleted
             else message_event(found[seq], slug, found[seq].username))
            for seq in range(after + 1, upto + 1)]


def post(user, room_id, body, ref):
    """Store a message once per (user, room, ref); return ``(message, created)``.

    Committed before this returns, so nobody hears of a message that is not stored.
    """
    with db_work():
        try:
            message, created = Message.objects.store(room_id, user, body, ref)
        except IntegrityError:
            # A concurrent resend of the same ref won; its seq was given back by the rollback.
            existing = Message.objects.sent_as(room_id, user, ref)
            if existing is None:
                raise
            return existing, False
    logger.debug("stored %s#%s from %s", room_id, message.seq, user.get_username())
    return message, created


def history(room_id, slug, before, limit):
    """Return up to ``limit`` shown messages below ``before`` (None: the newest), and ``more``."""
    with db_work():
        older = Message.objects.shown().filter(room_id=room_id).order_by("-seq")
        if before is not None:
            older = older.filter(seq__lt=before)
        messages, more = _page(older, limit, slug)
    return messages, more


def _page(newest_first, limit, slug):
    """Take ``limit`` from a newest-first queryset; return them oldest first, and ``more``."""
    rows = _rows(newest_first[:limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return [message_event(row, slug, row.username) for row in rows], more


#: A stored message as events need it: plain values, no model instances (a third of the cost).
Row = namedtuple("Row", "id seq body ref created username deleted")


def _rows(messages):
    return [Row(*values) for values in
            messages.values_list("id", "seq", "body", "ref", "created", "user__username", "deleted")]


def readers(slug):
    """Return who may read ``slug`` now: a callable ``(user_id) -> bool``, or None if it is gone."""
    with db_work():
        room = Room.objects.filter(slug=slug).values("id", "private").first()
        if room is None:
            return None
        if not room["private"]:
            return lambda user_id: True
        members = set(Room.members.through.objects.filter(room_id=room["id"])
                      .values_list("user_id", flat=True))
    return members.__contains__


def admits(user, room_id):
    """Tell whether ``user`` may still read the room with ``room_id`` (False if it is gone)."""
    with db_work():
        return (Room.objects.filter(id=room_id).filter(Q(private=False) | Q(members=user))
                .exists())


def last_seqs(room_ids):
    """Return ``{room_id: last_seq}`` for ``room_ids``, in one query."""
    with db_work():
        return dict(Room.objects.filter(id__in=room_ids).order_by().values_list("id", "last_seq"))
