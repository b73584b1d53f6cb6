"""Edit and delete stored messages, and what joins and history pages need to show the changes.

Every edit and deletion takes the room's next change seq (``Room.last_change``) in its own
transaction and writes it on the message (``Message.change``), with a ``MessageEdit`` row that
keeps the body it replaced. A client that was away asks for the changes after the change seq it
holds (``join`` with ``changes_since``). Like chat/rooms.py, every function runs its queries
inside ``db_work()`` and returns plain values.
"""
import logging
from collections import namedtuple
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from chat import protocol
from chat.db import db_work
from chat.errors import BadRequest, Forbidden
from chat.models import Message, MessageEdit, Room

logger = logging.getLogger(__name__)

#: A message as an edit or a deletion left it.
Changed = namedtuple("Changed", "id seq body edited change")

TAKE_CHANGE = "UPDATE chat_room SET last_change = last_change + 1 WHERE id = %s RETURNING last_change"


def edit(user, room_id, slug, seq, body):
    """Replace the body of message ``seq``; return ``(Changed, new)``.

    The same body again (a resend) changes nothing and returns the message as it is.
    """
    with db_work(), transaction.atomic():
        message = _changeable(user, room_id, slug, seq, "edit")
        if message.body == body and message.edited is not None:
            return _changed(message), False
        now = timezone.now()
        change = _take_change(room_id)
        MessageEdit.objects.create(message=message, action=MessageEdit.EDIT, body=message.body,
                                   by=user, at=now, change=change)
        Message.objects.filter(pk=message.pk).update(body=body, edited=now, change=change)
        message.body, message.edited, message.change = body, now, change
    logger.info("%s edited %s#%s (change %s)", user.get_username(), slug, seq, change)
    return _changed(message), True


def delete(user, room_id, slug, seq):
    """Delete message ``seq`` softly (its seq stays taken); return ``Changed``."""
    with db_work(), transaction.atomic():
        message = _changeable(user, room_id, slug, seq, "delete")
        _delete(message, user)
    logger.info("%s deleted %s#%s (change %s)", user.get_username(), slug, seq, message.change)
    return _changed(message)


def delete_shown(messages, by):
    """Delete ``messages`` (the admin's choice) as ``delete`` does; return those deleted now.

    Each takes its room's change seq, so that a client away meanwhile learns of it on ``join``.
    """
    done = []
    with db_work(), transaction.atomic():
        locked = Message.objects.select_for_update().filter(pk__in=[m.pk for m in messages],
                                                            deleted=False)
        for message in locked.select_related("room").order_by("room_id", "seq"):
            _delete(message, by)
            done.append(message)
    logger.info("%s deleted %s messages from the admin", by.get_username(), len(done))
    return done


def _delete(message, by):
    message.change = _take_change(message.room_id)
    MessageEdit.objects.create(message=message, action=MessageEdit.DELETE, body=message.body,
                               by=by, change=message.change)
    Message.objects.filter(pk=message.pk).update(deleted=True, change=message.change)


def _changeable(user, room_id, slug, seq, verb):
    """Lock message ``seq`` for ``user`` to change; raise why they may not."""
    message = Message.objects.select_for_update().filter(room_id=room_id, seq=seq).first()
    if message is None:
        raise BadRequest(f"there is no message {seq} in {slug!r}")
    if message.deleted:
        raise BadRequest(f"message {seq} in {slug!r} is deleted")
    if user.is_staff:
        return message  # moderators may change any message, at any time
    if message.user_id != user.pk:
        raise Forbidden(f"you may {verb} only your own messages")
    window = settings.CHAT_EDIT_WINDOW
    if timezone.now() - message.created > timedelta(seconds=window):
        raise Forbidden(f"too late: messages may be changed for {window:g} seconds after they "
                        "are sent")
    return message


def _take_change(room_id):
    # The room's row stays locked until commit: changes commit in change order, so a reader
    # that sees change N has every change below it.
    with connection.cursor() as cursor:
        cursor.execute(TAKE_CHANGE, [room_id])
        return cursor.fetchone()[0]


def _changed(message):
    return Changed(message.id, message.seq, message.body, message.edited, message.change)


def marks(room_id, lo, hi=None):
    """Return ``({seq: (edited, change)}, [deleted seqs])`` for ``lo < seq <= hi`` (None: all)."""
    with db_work():
        rows = Message.objects.filter(room_id=room_id, seq__gt=lo)
        if hi is not None:
            rows = rows.filter(seq__lte=hi)
        rows = (rows.filter(Q(deleted=True) | Q(edited__isnull=False)).order_by("seq")
                .values_list("seq", "deleted", "edited", "change"))
        edited, deleted = {}, []
        for seq, is_deleted, when, change in rows:
            if is_deleted:
                deleted.append(seq)
            else:
                edited[seq] = (when, change)
    return edited, deleted


def mark(messages, edited):
    """Mark the edited ones of ``messages`` (``message`` event dicts) from ``marks()``."""
    for message in messages:
        found = edited.get(message["seq"])
        if found is not None:
            protocol.with_edit(message, *found)
    return messages


def last_change(room_id):
    """Return the room's change seq."""
    with db_work():
        return Room.objects.filter(id=room_id).values_list("last_change", flat=True).first() or 0


def changes(room_id, slug, since, changes_since, cap):
    """Return ``(events, more)``: the changes after ``changes_since`` of messages up to ``since``.

    Oldest change first, at most ``cap``; ``more`` when further ones exist. Each is the live
    event that announced it (``message_edited`` or ``message_deleted``), without ref.
    """
    with db_work():
        rows = list(Message.objects.filter(room_id=room_id, change__gt=changes_since, seq__lte=since)
                    .order_by("change").values_list("id", "seq", "body", "edited", "change",
                                                    "deleted")[:cap + 1])
    events = [protocol.message_deleted(slug, id_, seq, change) if deleted
              else protocol.message_edited(slug, seq, id_, body, edited, change)
              for id_, seq, body, edited, change, deleted in rows[:cap]]
    return events, len(rows) > cap
