"""Direct messages: the private room of two users, found or made once per pair.

A direct conversation is an ordinary private room whose members are the two users, so it has
every guarantee of a room (seqs, resume, membership checked at join); ``DirectConversation``
only ties the room to its ordered pair. Page code, not socket code: called from views.
"""
import logging
import secrets

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q

from chat.models import DirectConversation, Room

logger = logging.getLogger(__name__)

NAME_MAX = Room._meta.get_field("name").max_length
SLUG_PREFIX = "dm-"
SLUG_TOKEN_BYTES = 8  # 16 hex digits: unguessable, so no room made by a form takes it first


class Refused(Exception):
    """A conversation that can't be started: ``str()`` says why, ``status`` is the HTTP status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def counterpart(user, username):
    """Return the active user named ``username`` that ``user`` may write to, or raise Refused."""
    User = get_user_model()
    username = (username or "").strip()
    if not username:
        raise Refused("Enter the username of the person to write to.", 400)
    other = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
    if other is None:
        raise Refused(f"There is no user named “{username}”.", 404)
    if other.pk == user.pk:
        raise Refused("You can't start a conversation with yourself.", 400)
    if not other.is_active:
        raise Refused(f"“{username}” can't receive messages: their account is inactive.", 404)
    return other


def _pair(user, other):
    """The two users ordered by id, as the constraint wants them."""
    return (user, other) if user.pk < other.pk else (other, user)


def find(user, other):
    """Return the room of ``user`` and ``other``'s conversation, or None."""
    low, high = _pair(user, other)
    found = (DirectConversation.objects.filter(user_low=low, user_high=high)
             .select_related("room").first())
    return found.room if found else None


def start(user, other):
    """Return ``(room, created)``: the pair's room, made now unless it exists.

    Two requests that both found nothing both try; the pair's unique constraint lets one
    commit, and the other's insert fails, which rolls its room back and reads the winner's.
    """
    room = find(user, other)
    if room is not None:
        return room, False
    low, high = _pair(user, other)
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=SLUG_PREFIX + secrets.token_hex(SLUG_TOKEN_BYTES),
                                       name=_name(low, high), private=True)
            room.members.add(low, high)
            DirectConversation.objects.create(room=room, user_low=low, user_high=high)
    except IntegrityError:
        room = find(user, other)
        if room is None:
            raise  # not the pair's constraint: a real fault, not a lost race
        logger.info("direct conversation of %s and %s made by a concurrent request",
                    low.get_username(), high.get_username())
        return room, False
    logger.info("direct conversation %s of %s and %s created", room.slug, low.get_username(),
                high.get_username())
    return room, True


def _name(low, high):
    """The room's own name (the admin's view); pages name it after the other user."""
    return f"{low.get_username()} and {high.get_username()}"[:NAME_MAX]


def conversations_of(user):
    """``user``'s conversations, the newest activity first, with the room and both users."""
    return (DirectConversation.objects.filter(Q(user_low=user) | Q(user_high=user))
            .select_related("room", "user_low", "user_high")
            .order_by("-room__active_at", "-room_id"))


def listed(conversations, user):
    """Return the conversations' rooms, each with ``other``: the other user's name."""
    rooms = []
    for conversation in conversations:
        room = conversation.room
        room.other = conversation.other(user).get_username()
        rooms.append(room)
    return rooms
