"""Rooms and their messages. Each room has a gapless sequence: seq 1, 2, 3, ..."""
from datetime import timedelta

import logging

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchConfig, SearchVectorField
from django.db import DatabaseError, connections, models
from django.db.models import ExpressionWrapper, F, Func, Q
from django.db.models.functions import Now
from django.utils import timezone

logger = logging.getLogger(__name__)

INVALID_STATEMENT_NAME = "26000"  # SQLSTATE: EXECUTE of a statement this session lacks
DUPLICATE_PREPARED_STATEMENT = "42P05"


class RoomQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Rooms ``user`` may join: every public room and the private ones they belong to."""
        return self.filter(Q(private=False) | Q(members=user)).distinct()

class Room(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    private = models.BooleanField(default=False, help_text="Only members may join.")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="chat_rooms")
    last_seq = models.BigIntegerField(default=0, editable=False)
    # The room's change seq: bumped by every edit and deletion, in its transaction (chat/edits.py).
    last_change = models.BigIntegerField(default=0, db_default=0, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    # The newest message's time (or the room's creation): the room lists show the newest first.
    # Set by MessageQuerySet.store in the UPDATE that takes the seq, so it costs no query.
    active_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)

    objects = RoomQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def admits(self, user):
        """Tell whether ``user`` may join this room."""
        return not self.private or self.members.filter(pk=user.pk).exists()


class MessageQuerySet(models.QuerySet):
    def shown(self):
        """Messages not deleted."""
        return self.filter(deleted=False)

    def after(self, room, seq):
        """The room's messages with a seq above ``seq``, oldest first."""
        return self.filter(room=room, seq__gt=seq).order_by("seq")

    def before(self, room, seq):
        """The room's messages with a seq below ``seq``, newest first."""
        return self.filter(room=room, seq__lt=seq).order_by("-seq")

    def sent_as(self, room, user, ref):
        """The message that ``user`` sent to ``room`` with ``ref``, if any."""
        return self.filter(room=room, user=user, ref=ref).first()

    def store(self, room_id, user, body, ref):
        """Store a message once per (room, user, ref) in one statement; return (message, created).

        The seq is taken by ``UPDATE ... RETURNING`` on the room's row, in the same statement
        (so the same transaction) as the insert: the row lock makes concurrent senders to a
        room take turns across workers and hosts, and a failed insert gives its seq back, so
        the sequence stays gapless. One round trip instead of five (look-up, BEGIN, UPDATE,
        INSERT, COMMIT). A concurrent resend of the same ref fails the unique constraint:
        the caller catches IntegrityError and reads the winner with ``sent_as``.
        """
        created_at = timezone.now()
        row = _stored_row(connections[self.db], {"room": room_id, "user": user.pk, "body": body,
                                                  "ref": ref, "created": created_at})
        if row is None:
            raise Room.DoesNotExist(f"no room with id {room_id}")
        message_id, seq, created, is_new = row
        if not is_new:
            return self.get(pk=message_id), False
        return Message(id=message_id, room_id=room_id, seq=seq, user=user, body=body, ref=ref,
                       created=created), True


STORE_SQL = """
    WITH existing AS (
        SELECT id, seq, created FROM chat_message
        WHERE room_id = %(room)s AND user_id = %(user)s AND ref = %(ref)s
    ), taken AS (
        UPDATE chat_room SET last_seq = last_seq + 1, active_at = %(created)s
        WHERE id = %(room)s AND NOT EXISTS (SELECT 1 FROM existing)
        RETURNING last_seq
    ), inserted AS (
        INSERT INTO chat_message (room_id, seq, user_id, body, ref, created, deleted)
        SELECT %(room)s, last_seq, %(user)s, %(body)s, %(ref)s, %(created)s, false FROM taken
        RETURNING id, seq, created
    )
    SELECT id, seq, created, true FROM inserted
    UNION ALL
    SELECT id, seq, created, false FROM existing"""
#: ``Message.objects.store``'s statement, prepared once per connection: PostgreSQL then skips
#: parsing and planning it, about 150 us of its CPU per message (half of the statement's cost).
# Versioned with STORE_SQL: behind PgBouncer a pooled server connection may still hold an
# older statement under the old name (its "already exists" is ignored on purpose).
STORE_PREPARED = "chat_store_message_2"
STORE_PARAMS = ("room", "user", "body", "ref", "created")
_prepare = True  # False once prepared statements were lost between statements (PgBouncer)


def _stored_row(wrapper, params):
    """Run the store statement on ``wrapper`` (prepared, when it can be); return its row."""
    global _prepare
    with wrapper.cursor() as cursor:
        if _prepare and _prepared(wrapper, cursor):
            try:
                cursor.execute(f"EXECUTE {STORE_PREPARED} (%(room)s, %(user)s, %(body)s, "
                               "%(ref)s, %(created)s)", params)
                return cursor.fetchone()
            except DatabaseError as error:
                if getattr(error.__cause__, "pgcode", None) != INVALID_STATEMENT_NAME:
                    raise
            _prepare = False
            logger.warning("a prepared statement vanished between two statements (PgBouncer in "
                           "transaction mode?): storing messages without preparing them")
        cursor.execute(STORE_SQL, params)
        return cursor.fetchone()


def _prepared(wrapper, cursor):
    """Prepare the store statement on this connection unless done; tell whether it is there."""
    if getattr(wrapper, "chat_store_prepared", None) is wrapper.connection is not None:
        return True
    numbered = STORE_SQL
    for number, name in enumerate(STORE_PARAMS, 1):
        numbered = numbered.replace(f"%({name})s", f"${number}")
    try:
        cursor.execute(f"PREPARE {STORE_PREPARED} (bigint, bigint, text, text, timestamptz) AS "
                       + numbered)
    except DatabaseError as error:
        if getattr(error.__cause__, "pgcode", None) != DUPLICATE_PREPARED_STATEMENT:
            raise  # (a server connection PgBouncer gave us already had it: fine)
    wrapper.chat_store_prepared = wrapper.connection
    return True


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    body = models.TextField()
    ref = models.CharField(max_length=64, null=True, blank=True,
                           help_text="The sender's idempotency key.")
    created = models.DateTimeField(default=timezone.now)
    deleted = models.BooleanField(default=False)
    # Edits and deletions (chat/edits.py): when the body was last edited, and the room's change
    # seq of the last edit or deletion (0: never changed). DB defaults: the store statement
    # inserts without naming them.
    edited = models.DateTimeField(null=True, blank=True, editable=False)
    change = models.BigIntegerField(default=0, db_default=0, editable=False)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            # Also the (room, seq) index that join, history and catch-up read by.
            models.UniqueConstraint(fields=["room", "seq"], name="chat_message_room_seq"),
            # Idempotency lives in the database itself: a retried send can't store twice.
            models.UniqueConstraint(fields=["room", "user", "ref"], condition=Q(ref__isnull=False),
                                    name="chat_message_room_user_ref"),
        ]
        indexes = [
            # A resuming join's changes: only changed messages are indexed, so sends pay nothing.
            models.Index(fields=["room", "change"], condition=Q(change__gt=0),
                         name="chat_message_room_change"),
            # Full-text search (chat/search.py): a functional index, so edits need no second
            # column kept in step; the query must use this very expression to be served by it.
            GinIndex(Func(SearchConfig(settings.CHAT_SEARCH_CONFIG), F("body"), function="to_tsvector",
                          output_field=SearchVectorField()), name="chat_message_body_search"),
        ]

    def __str__(self):
        return f"{self.room.slug}#{self.seq}"


class PresenceQuerySet(models.QuerySet):
    def live(self, ttl):
        """Rows whose worker sent a heartbeat within ``ttl`` seconds, by the database's clock.

        The database's clock, not this host's: ``seen`` is written with ``now()`` in SQL, and
        hosts whose clocks disagree would otherwise expire each other's users (issue 13).
        """
        cutoff = ExpressionWrapper(Now() - timedelta(seconds=ttl), output_field=models.DateTimeField())
        return self.filter(seen__gte=cutoff)


class Presence(models.Model):
    """A user in a room through one worker: global presence across workers and hosts.

    Keyed by slug and username (no foreign keys): written on every join and leave, and
    read only to list who is here.
    """

    room = models.CharField(max_length=50)
    username = models.CharField(max_length=150)
    worker = models.CharField(max_length=200,
                              help_text="host:pid:random, the worker process holding the sockets")
    seen = models.DateTimeField(db_default=Now(), help_text="the last heartbeat, by the database's clock")

    objects = PresenceQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "username", "worker"],
                                               name="chat_presence_room_username_worker")]
        indexes = [models.Index(fields=["worker"]), models.Index(fields=["seen"])]


class LoginFailure(models.Model):
    """A failed log-in: counted per username and per client address (chat/throttle.py)."""

    username = models.CharField(max_length=150)  # as typed, case-folded
    address = models.CharField(max_length=45)  # REMOTE_ADDR
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["username", "at"]), models.Index(fields=["address", "at"]),
                   models.Index(fields=["at"])]


class EventSpill(models.Model):
    """An event without a seq too large for a NOTIFY (chat/brokers/postgres.py).

    The NOTIFY carries only the row's id; every worker's listener reads the payload whole.
    Publishers delete rows a few minutes old.
    """

    topic = models.TextField(help_text="the room's slug, or * for every socket")
    payload = models.BinaryField()
    created = models.DateTimeField(db_default=models.functions.Now())  # the database's clock

    class Meta:
        indexes = [models.Index(fields=["created"], name="chat_eventspill_created")]


class DirectConversation(models.Model):
    """The private room of two users (chat/direct.py): one per pair, whoever starts it.

    The pair is stored ordered (``user_low`` has the smaller id), so that the unique
    constraint sees (a, b) and (b, a) as one pair: two people starting it at the same moment
    make one room, and the loser's insert fails and is rolled back.
    """

    room = models.OneToOneField(Room, on_delete=models.CASCADE, related_name="direct")
    user_low = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    user_high = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_low", "user_high"], name="chat_direct_pair"),
            models.CheckConstraint(condition=Q(user_low__lt=models.F("user_high")),
                                   name="chat_direct_pair_ordered"),
        ]

    def __str__(self):
        return f"{self.user_low_id} and {self.user_high_id}"

    def other(self, user):
        """The other one of the pair."""
        return self.user_high if self.user_low_id == user.pk else self.user_low


class MessageEdit(models.Model):
    """One change to a message (chat/edits.py): the body it had before, when, and by whom."""

    EDIT, DELETE = "edit", "delete"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="edits")
    action = models.CharField(max_length=6, choices=[(EDIT, "edited"), (DELETE, "deleted")])
    body = models.TextField(help_text="the body before this change")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                           related_name="+")
    at = models.DateTimeField(default=timezone.now)
    change = models.BigIntegerField(help_text="the room's change seq this change took")

    class Meta:
        ordering = ["message", "change"]

    def __str__(self):
        return f"{self.message_id} {self.action} #{self.change}"


class ReadMarker(models.Model):
    """How far a user has read a room (chat/reads.py): the newest seq they have seen.

    Monotonic: only ever moved forward, in the upsert itself (``GREATEST``), so two tabs
    reporting out of order can't move it back.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")
    last_read = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "room"], name="chat_readmarker_user_room")]

    def __str__(self):
        return f"{self.user_id} read {self.room_id} to {self.last_read}"


class MentionManager(models.Manager):
    def unseen(self):
        """How many of these mentions are unseen (``{{ user.chat_mentions.unseen }}``).

        A user's related manager answers what the view already read, when it did
        (chat/mentions.py, ``remember_unseen``).
        """
        known = getattr(getattr(self, "instance", None), "chat_unseen_mentions", None)
        return known if known is not None else self.filter(seen=False).count()

    def newest_unseen(self):
        """The newest unseen mention with its message and room (the header badge links to it)."""
        return self.filter(seen=False).select_related("message__room").order_by("-message_id").first()


class Mention(models.Model):
    """A user named ``@username`` in a message (chat/mentions.py); seen once read past."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="chat_mentions")
    seen = models.BooleanField(default=False)

    objects = MentionManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="chat_mention_message_user")]
        # Every page's header counts a user's unseen mentions: only those are indexed.
        indexes = [models.Index(fields=["user"], condition=Q(seen=False), name="chat_mention_unseen")]

    def __str__(self):
        return f"{self.user_id} in {self.message_id}"
