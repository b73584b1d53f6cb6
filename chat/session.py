"""The client session: one per connection, whatever carries its bytes (WebSocket or HTTP).

It holds what the protocol needs of a connection: its user, its memberships (each room's
``last_seq``, what is held back until ``joined``), its outbox bounded in frames and bytes
(chat/outbox.py), its budgets, and its registration with the worker's hub and
:class:`~chat.authority.Authority` (the per-user budget; revocation closes it). Frames are
handled here, once, for both transports (chat/handlers.py); a transport subclass only moves
the outbox's bytes (chat/sockets.py, chat/longpoll.py) by implementing ``_flush_soon``.

Each session has a connection id (``<pid>-<n>``, unique in the worker's log) carried by every
line it logs; it logs one line when it opens and one when it closes, as key=value pairs.
"""
import itertools
import logging
import os
import time

import gevent

from chat import handlers, metrics, protocol
from chat.authority import TOO_MANY_SOCKETS
from chat.errors import ChatError, UnknownType
from chat.outbox import Outbox
from chat.ratelimit import TokenBucket
from chat.wsmends import encode_frame

logger = logging.getLogger(__name__)

TOO_SLOW = "too slow: reconnect and resume with since"

_serial = itertools.count(1)


def connection_id():
    """Return a new short id, unique among this worker's connections: ``<pid>-<n>``."""
    return f"{os.getpid()}-{next(_serial)}"


def too_many_reason(per_user):
    """The close reason of a connection over the account's budget (4429)."""
    return f"too many connections for this account (at most {per_user}): close some tabs"


class Membership:
    """A session's place in one room: buffering until ``joined`` is sent, then live."""

    __slots__ = ("room_id", "last_seq", "buffer", "checked_at")

    def __init__(self):
        self.room_id = None
        self.last_seq = 0
        self.buffer = []  # (seq, frame) that arrived while the room was being read
        self.checked_at = 0.0  # when the user was last found allowed to read the room


class ClientSession:
    """One client's protocol state; subclasses move the outbox's frames to the client."""

    kind = "connection"  # the word its log lines start with
    log = logger  # its transport's logger, which its open and close lines go to

    def __init__(self, user, *, hub, limiter, authority, session_key, budgets,
                 clock=time.monotonic):
        self.user = user
        self.user_id = user.pk
        self.username = user.get_username()
        self.session_key = session_key  # re-keyed by the authority when Django cycles it
        self.hub = hub
        self.limiter = limiter
        self.authority = authority
        self.budgets = budgets
        self.rooms = {}  # slug -> Membership
        self.clock = clock
        self.outbox = Outbox(budgets.queue_frames, budgets.queue_bytes)
        self.db_frames = TokenBucket(budgets.db_frame_rate, budgets.db_frame_burst, clock)
        self.typing = TokenBucket(budgets.typing_rate, budgets.typing_burst, clock)
        self.closing = False
        self.expiry_timer = None  # set by the authority
        self.opened_at = None
        self._settle = None  # admission's release of this session's setup slot (chat/admission.py)
        self._settle_timer = None
        self.conn_id = connection_id()

    # -- life ---------------------------------------------------------------------------------

    def open(self, expires_at=None):
        """Register with the authority and the hub; False when the account has too many."""
        if not self.authority.admit(self):
            self.log.info("%s refused conn=%s user=%s: over %s sockets for this user", self.kind,
                        self.conn_id, self.username, self.authority.per_user)
            return False
        self.opened_at = self.clock()
        self.log.info("%s opened conn=%s user=%s", self.kind, self.conn_id, self.username)
        metrics.OPEN_SOCKETS.inc()
        self.hub.sessions.add(self)
        self.authority.watch_expiry(self, expires_at)
        return True

    def finish(self, code):
        """Undo ``open``: leave every room, forget the registration; log the close."""
        rooms = len(self.rooms)
        self.hub.sessions.discard(self)
        self.authority.discard(self)
        metrics.OPEN_SOCKETS.dec()
        for slug in list(self.rooms):
            self.unsubscribe(slug)
        self.settled()
        self.log.info("%s closed conn=%s user=%s rooms=%d duration=%.1fs code=%s", self.kind,
                    self.conn_id, self.username, rooms, self.clock() - self.opened_at, code)

    def refused(self):
        """Return the close ``(code, reason)`` for a session ``open`` refused."""
        return TOO_MANY_SOCKETS, too_many_reason(self.authority.per_user)

    # -- frames in ----------------------------------------------------------------------------

    def handle(self, message):
        """Dispatch one client message; turn failures into ``error`` events."""
        frame = None
        try:
            if not isinstance(message, str):
                raise protocol.BadRequest("binary messages are not accepted; send JSON text")
            frame = protocol.parse(message)
            command = handlers.registry().get(frame.type)
            if command is None:
                raise UnknownType(f"unknown frame type {frame.type!r}")
            command(self, frame)
        except ChatError as error:
            if error.ref is None and frame is not None:
                error.ref = frame.ref
            self.send(protocol.error_event(error))
        except Exception:
            logger.exception("frame failed conn=%s user=%s", self.conn_id, self.username)
            self.send(protocol.error_event(ChatError("the server failed to handle this frame",
                                                     ref=frame.ref if frame else None)))

    # -- rooms --------------------------------------------------------------------------------

    def subscribe(self, slug):
        """Start receiving ``slug``'s events, held back until ``ready()``; return the channel."""
        self.rooms[slug] = Membership()
        return self.hub.attach(self, slug)

    def ready(self, slug, room_id, seq):
        """Go live in ``slug`` after ``joined`` (up to ``seq``): pass on what was held back."""
        membership = self.rooms[slug]
        membership.room_id, membership.last_seq = room_id, seq
        membership.checked_at = self.clock()
        self.settled()  # joined: set up
        held, membership.buffer = membership.buffer, None
        self.outbox.bytes -= sum(len(frame) for _, frame in held)  # counted while held
        for held_seq, frame in held:
            self.deliver(slug, held_seq, frame)

    def unsubscribe(self, slug):
        """Stop receiving ``slug``'s events and end this session's presence there."""
        if self.rooms.pop(slug, None) is not None:
            self.hub.detach(self, slug)

    def settle_with(self, release, timeout):
        """Call ``release`` once this session is set up: its first ``joined``, its close, or
        ``timeout`` seconds from now, whichever comes first."""
        if release is None:
            return
        self._settle = release
        self._settle_timer = gevent.get_hub().loop.timer(timeout)
        self._settle_timer.start(self.settled)  # a timer, not a greenlet per session

    def settled(self):
        """Free this session's setup slot (idempotent)."""
        release, self._settle = self._settle, None
        if self._settle_timer is not None:
            self._settle_timer.close()
            self._settle_timer = None
        if release is not None:
            release()

    def evict(self, slug, detail):
        """Take this session out of ``slug`` because its user may no longer read it."""
        if slug not in self.rooms or self.closing:
            return
        self.unsubscribe(slug)
        self.send(protocol.event("left", room=slug, reason="forbidden", detail=detail))
        logger.info("evicted conn=%s user=%s from %s: %s", self.conn_id, self.username, slug, detail)

    # -- events out ---------------------------------------------------------------------------

    def deliver(self, slug, seq, frame):
        """Take a room's event from the hub: each seq once, in order, after ``joined``.

        Tell whether it was queued (or held back until ``joined``) for this client.
        """
        membership = self.rooms.get(slug)
        if membership is None:
            return False
        if membership.buffer is not None:
            membership.buffer.append((seq, frame))
            self.outbox.bytes += len(frame)  # held for this client all the same
            if (len(membership.buffer) > self.outbox.max_frames
                    or self.outbox.bytes > self.outbox.max_bytes):
                self.close(1013, TOO_SLOW)
                return False
            return True
        if seq is not None:
            if seq <= membership.last_seq:
                return False
            membership.last_seq = seq
        return self.send_frame(frame)

    def send(self, event):
        """Queue one event for this client."""
        self.send_frame(encode_frame(protocol.encode(event)))

    def send_frame(self, frame):
        """Queue prebuilt frame bytes (the same bytes may go to many sessions); tell if queued."""
        if self.closing:
            return False
        if not self.outbox.put(frame):
            logger.warning("send queue overflowed conn=%s user=%s events=%s bytes=%s: closing "
                           "with 1013", self.conn_id, self.username, len(self.outbox),
                           self.outbox.bytes)
            self.close(1013, TOO_SLOW)
            return False
        self._flush_soon()
        return True

    def close(self, code, reason="", farewell=None):
        """Close with ``code`` after what is being sent (and ``farewell``, a prebuilt frame);
        drop what is still queued."""
        if self.closing:
            return
        self.closing = True
        if code == 1013:
            metrics.SEND_QUEUE_OVERFLOWS.inc()
        self.outbox.close(code, reason, farewell)
        self._flush_soon()

    def _flush_soon(self):
        """Have the outbox's frames (or its close) moved to the client soon; never wait."""
        raise NotImplementedError
