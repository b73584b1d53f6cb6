"""Mentions: ``@username`` in a message notifies that user on their own channel, online or not.

A mention is stored (once per message and user, by a unique constraint) only for a real,
active user who may read the room, never for the author; then a ``mention`` event goes to
the user's channel (``@<user id>``), reaching every page of theirs. The socket's send does
this after the broadcast, in a greenlet of its own: the message's path pays only for a regex.
Stored rows are what the header's badge counts, so a mention made while the user was away
shows on their next visit; reading the room past the message marks it seen (chat/reads.py).
"""
import logging
import re

import gevent
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Subquery

from chat import protocol
from chat.db import db_work
from chat.hub import USER_PREFIX
from chat.models import Mention, Room

logger = logging.getLogger(__name__)

# Django's username characters but "@": letters, digits and . + - _, after a "@" that does not
# follow a word character (so "ann@example.com" mentions nobody). Kept in step with messages.js.
MENTION = re.compile(r"(?<![\w@])@([\w.+-]{1,150})")

# Stored seen when the user's marker is past it already (read live on a page); only unseen
# ones are notified.
STORE_SQL = """
    INSERT INTO chat_mention (message_id, user_id, seen)
    SELECT %(message)s, mentioned.id, COALESCE(
        (SELECT marker.last_read >= %(seq)s FROM chat_readmarker AS marker
         WHERE marker.user_id = mentioned.id AND marker.room_id = %(room)s), false)
    FROM unnest(%(users)s::bigint[]) AS mentioned(id)
    ON CONFLICT (message_id, user_id) DO NOTHING
    RETURNING user_id, seen"""


def names(body):
    """Return the distinct usernames ``body`` mentions, in order, at most ``CHAT_MENTIONS_MAX``.

    A trailing ``.``, ``+`` or ``-`` is punctuation ("thanks @ann.").
    """
    found = []
    for match in MENTION.finditer(body):
        name = match.group(1).rstrip(".+-")
        if name and name not in found:
            found.append(name)
            if len(found) == settings.CHAT_MENTIONS_MAX:
                break
    return found


def after_send(hub, message, slug, author):
    """Store and notify the mentions of a message just broadcast, off the sender's path."""
    mentioned = names(message.body)
    if mentioned:
        gevent.spawn(_guarded, lambda: notify(message, slug, author, mentioned,
                                              lambda user_id, event: hub.publish(
                                                  f"{USER_PREFIX}{user_id}", event)))


def _guarded(work):
    try:
        work()
    except Exception:
        logger.exception("storing or notifying mentions failed")


def notify(message, slug, author, mentioned=None, deliver=None):
    """Store ``message``'s new mentions, send each user not past it a ``mention``; return their ids.

    ``deliver(user_id, event)``: how to reach the user's channel (default ``chat.publish.to_user``,
    for plain Django code). A second call for the same message notifies nobody again.
    """
    mentioned = names(message.body) if mentioned is None else mentioned
    if not mentioned:
        return []
    with db_work():
        users = _readers(message.room_id, mentioned, author.pk)
        if not users:
            return []
        with connection.cursor() as cursor:
            cursor.execute(STORE_SQL, {"message": message.id, "users": users,
                                       "seq": message.seq, "room": message.room_id})
            created = [user_id for user_id, seen in cursor.fetchall() if not seen]
    if deliver is None:
        from chat.publish import to_user as deliver  # noqa: N813 (publish imports the hub)
    event = mention_event(message, slug, author.get_username())
    for user_id in created:
        deliver(user_id, event)
    logger.debug("message %s mentions %s users", message.id, len(created))
    return created


def _readers(room_id, usernames, author_id):
    """The ids of the active users among ``usernames`` who may read the room, but the author."""
    users = (get_user_model().objects.filter(username__in=usernames, is_active=True)
             .exclude(pk=author_id))
    private = Room.objects.filter(id=room_id).values_list("private", flat=True).first()
    if private is None:
        return []
    if private:
        users = users.filter(chat_rooms__id=room_id)
    return list(users.values_list("pk", flat=True))


def mention_event(message, slug, by):
    """Build ``mention``: ``by`` named the user in message ``seq`` of room ``slug``."""
    return protocol.event("mention", room=slug, seq=message.seq, id=message.id, by=by,
                          body=message.body, ts=protocol.timestamp(message.created))


def with_unseen(rooms, user):
    """Annotate a queryset of rooms with ``user``'s unseen mentions, all rooms (``unseen_mentions``).

    The room page reads them with its room, so the header's badge costs it no query of its own.
    """
    count = (Mention.objects.filter(user_id=user.pk, seen=False).order_by()
             .values("user_id").annotate(n=Count("pk")).values("n"))
    return rooms.annotate(unseen_mentions=Subquery(count[:1]))


def remember_unseen(user, count):
    """Let ``{{ user.chat_mentions.unseen }}`` answer ``count`` without a query (this request)."""
    user.chat_unseen_mentions = count or 0
