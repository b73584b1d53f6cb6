"""The socket session: one per WebSocket, with a reader, a bounded outbox and keep-alive.

The reader greenlet (the handler's own) parses and dispatches frames one at a time.
Everything sent to the client goes through an outbox bounded in frames and bytes
(chat/outbox.py). A hub callback writes it once per turn of the event loop (what was queued
meanwhile joined into one write) without waiting; only a socket the kernel cannot take it all
from gets a writer greenlet, until its backlog is gone. So a slow or dead client never delays
the others (when its outbox overflows it is closed with 1013 and comes back with ``since``),
and an idle socket costs no greenlet but its reader. A keep-alive timer pings and drops peers
that went silent. The worker's :class:`~chat.authority.Authority`
admits the socket (the per-user budget) and may close it while it runs (revocation).

Each session has a connection id (``<pid>-<n>``, unique in the worker's log) carried by every
line it logs; it logs one line when it opens and one when it closes, as key=value pairs.
"""
import itertools
import logging
import os
import socket
import time

import gevent

from chat import handlers, metrics, protocol
from chat.authority import TOO_MANY_SOCKETS
from chat.errors import ChatError, UnknownType
from chat.outbox import Outbox, flusher
from chat.ratelimit import TokenBucket
from chat.wsmends import MendedWebSocket, WebSocketError, encode_frame

logger = logging.getLogger(__name__)

PING_FRAME = encode_frame(b"", MendedWebSocket.OPCODE_PING)
#: Bytes of queued frames joined into one write when a socket's outbox has a backlog.
WRITE_BATCH_BYTES = 256 * 1024
TOO_SLOW = "too slow: reconnect and resume with since"
#: The most of a peer's input read and dropped after our close frame; more gets a reset.
LINGER_BYTES = 1 << 20
#: The close code of a connection that ended without a close frame (RFC 6455, 7.1.5).
ABNORMAL_CLOSURE = 1006

_serial = itertools.count(1)


def connection_id():
    """Return a new short id, unique among this worker's connections: ``<pid>-<n>``."""
    return f"{os.getpid()}-{next(_serial)}"


class Membership:
    """A session's place in one room: buffering until ``joined`` is sent, then live."""

    __slots__ = ("room_id", "last_seq", "buffer", "checked_at")

    def __init__(self):
        self.room_id = None
        self.last_seq = 0
        self.buffer = []  # (seq, frame) that arrived while the room was being read
        self.checked_at = 0.0  # when the user was last found allowed to read the room


class SocketSession:
    """Serve one authenticated WebSocket until it closes."""

    def __init__(self, ws, user, *, hub, limiter, authority, session_key, budgets,
                 ping_interval, idle_timeout, close_timeout=5.0, clock=time.monotonic):
        self.ws = ws
        self.user = user
        self.user_id = user.pk
        self.username = user.get_username()
        self.session_key = session_key  # re-keyed by the authority when Django cycles it
        self.hub = hub
        self.limiter = limiter
        self.authority = authority
        self.budgets = budgets
        self.rooms = {}  # slug -> Membership
        self.close_timeout = close_timeout
        self.clock = clock
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.outbox = Outbox(budgets.queue_frames, budgets.queue_bytes)
        self.db_frames = TokenBucket(budgets.db_frame_rate, budgets.db_frame_burst, clock)
        self.typing = TokenBucket(budgets.typing_rate, budgets.typing_burst, clock)
        self.closing = False
        self.expiry_timer = None  # set by the authority
        self._close_timer = None  # cuts off a peer that does not answer our close
        self._writer = None  # a greenlet while the outbox has a backlog the kernel did not take
        self._flush_due = False  # a hub callback will write the outbox
        self._keepalive = None
        self._settle = None  # admission's release of this socket's setup slot (chat/admission.py)
        self._settle_timer = None
        self.conn_id = connection_id()

    def run(self, expires_at=None):
        """Read and dispatch frames until the peer leaves or the session is closed."""
        if not self.authority.admit(self):
            logger.info("socket refused conn=%s user=%s: over %s sockets for this user",
                        self.conn_id, self.username, self.authority.per_user)
            self.ws.close(TOO_MANY_SOCKETS, f"too many connections for this account (at most "
                                            f"{self.authority.per_user}): close some tabs")
            self._linger()
            return
        opened_at = self.clock()
        logger.info("socket opened conn=%s user=%s", self.conn_id, self.username)
        metrics.OPEN_SOCKETS.inc()
        try:  # from here on the finally undoes what was done: the gauge above included
            self.hub.sessions.add(self)
            self.authority.watch_expiry(self, expires_at)
            self._keepalive = self._start_keepalive()
            while True:
                message = self.ws.receive()
                if message is None:
                    break
                self.handle(message)
        except Exception:
            # Logged here, once: Django's handler would render a debug page on the hub.
            logger.exception("socket failed conn=%s user=%s", self.conn_id, self.username)
            self.ws.close(1011, "server error")  # before _linger() shuts our side down
        finally:
            rooms = len(self.rooms)
            self.hub.sessions.discard(self)
            self.authority.discard(self)
            metrics.OPEN_SOCKETS.dec()
            for slug in list(self.rooms):
                self.unsubscribe(slug)
            if self._writer is not None:
                self._writer.kill(block=False)
            if self._close_timer is not None:
                self._close_timer.close()
            if self._keepalive is not None:
                self._keepalive.close()  # its callback holds this session
            self.settled()
            self._linger()
            logger.info("socket closed conn=%s user=%s rooms=%d duration=%.1fs code=%s",
                        self.conn_id, self.username, rooms, self.clock() - opened_at,
                        self.ws.close_code or ABNORMAL_CLOSURE)

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
        """Stop receiving ``slug``'s events and end this socket's presence there."""
        if self.rooms.pop(slug, None) is not None:
            self.hub.detach(self, slug)

    def settle_with(self, release, timeout):
        """Call ``release`` once this socket is set up: its first ``joined``, its close, or
        ``timeout`` seconds from now, whichever comes first."""
        if release is None:
            return
        self._settle = release
        self._settle_timer = gevent.get_hub().loop.timer(timeout)
        self._settle_timer.start(self.settled)  # a timer, not a greenlet per socket

    def settled(self):
        """Free this socket's setup slot (idempotent)."""
        release, self._settle = self._settle, None
        if self._settle_timer is not None:
            self._settle_timer.close()
            self._settle_timer = None
        if release is not None:
            release()

    def evict(self, slug, detail):
        """Take this socket out of ``slug`` because its user may no longer read it."""
        if slug not in self.rooms or self.closing:
            return
        self.unsubscribe(slug)
        self.send(protocol.event("left", room=slug, reason="forbidden", detail=detail))
        logger.info("evicted conn=%s user=%s from %s: %s", self.conn_id, self.username, slug, detail)

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
        """Close with ``code`` after the frame being written (and ``farewell``, a prebuilt
        frame); drop what is still queued."""
        if self.closing:
            return
        self.closing = True
        if code == 1013:
            metrics.SEND_QUEUE_OVERFLOWS.inc()
        self.outbox.close(code, reason, farewell)
        self._flush_soon()
        # A peer that never reads or never answers is cut off after CLOSE_TIMEOUT.
        self._close_timer = gevent.get_hub().loop.timer(self.close_timeout)
        self._close_timer.start(self.ws.shutdown)  # a timer: a drain closes thousands at once

    def _flush_soon(self):
        if self._writer is None and not self._flush_due:
            self._flush_due = True
            flusher().add(self)

    def _flush(self):
        """Write the outbox from the hub, taking what the kernel takes now; never wait.

        Runs once per turn of the loop, so the frames queued meanwhile (a burst of messages)
        go out in one write. What is left, or a close, goes to a writer greenlet.
        """
        self._flush_due = False
        if self._writer is not None:
            return
        try:
            while not self.ws.pending and (data := self.outbox.take(WRITE_BATCH_BYTES)):
                if not self.ws.send_now(data):
                    self.outbox.give_back(data)
                    break
        except WebSocketError:
            self.ws.shutdown()  # dead: the reader sees it and ends the session
            return
        except Exception:
            logger.exception("writing failed conn=%s user=%s: closing with 1011",
                             self.conn_id, self.username)
            self.closing = True
            self.outbox.close(1011, "server error")
        if self.outbox.frames or self.ws.pending or self.outbox.closing is not None:
            self._writer = gevent.spawn(self._write_loop)

    def _write_loop(self):
        """Write the backlog, waiting for the kernel, until the outbox is empty or closed."""
        try:
            while True:
                data = self.outbox.take(WRITE_BATCH_BYTES)
                if data is None and not self.ws.pending:
                    if self.outbox.closing is None:
                        self._writer = None  # no backlog: hub callbacks write again
                        return
                    code, reason = self.outbox.closing
                    self.ws.close(code, reason)
                    # Debug: the "socket closed" line carries the code (a drain closes thousands).
                    logger.debug("sent close conn=%s user=%s code=%s reason=%r",
                                self.conn_id, self.username, code, reason)
                    return
                try:
                    self.ws.send_raw(data or b"")
                except (OSError, WebSocketError):
                    self.ws.shutdown()
                    return
        except Exception:
            # Never a silent death (a None frame once killed every writer): one line, then 1011.
            logger.exception("writer failed conn=%s user=%s: closing with 1011",
                             self.conn_id, self.username)
            self.closing = True
            self.ws.close(1011, "server error")
            self.ws.shutdown()

    def _linger(self):
        """End TCP politely: FIN after our close frame, then drain the peer until it closes.

        Closing a socket with unread input makes the kernel send RST, which can destroy our
        close frame before the client reads it (a client closed with 1009 is usually still
        sending its payload). Same idea as nginx's lingering_close. A peer that keeps sending
        past ``LINGER_BYTES`` gets the reset: a flooder once had 5 to 8 GB drained in 3 s.
        """
        sock = getattr(self.ws.handler, "socket", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            drained = 0
            with gevent.Timeout(self.close_timeout, False):
                while drained < LINGER_BYTES and (data := sock.recv(65536)):
                    drained += len(data)
                    # A peer still flooding never makes recv() wait: give the hub a turn.
                    gevent.sleep(0)
        except OSError:
            pass

    def _start_keepalive(self):
        """Ping the peer and drop it once silent, from a timer on the hub.

        A timer, not a greenlet: each parked greenlet holds about 8 KiB (its own stack copy and
        Python frame stack), and this runs for every idle socket. The callback never blocks.
        """
        every = min(self.ping_interval, self.idle_timeout / 2)
        timer = gevent.get_hub().loop.timer(every, every)
        timer.start(self._keepalive_tick)
        return timer

    def _keepalive_tick(self):
        if self.closing:
            return
        silent_for = self.clock() - self.ws.last_received
        if silent_for > self.idle_timeout:
            logger.info("socket silent conn=%s user=%s for=%.0fs: closing",
                        self.conn_id, self.username, silent_for)
            self.close(1001, "idle timeout")
            return
        self.send_frame(PING_FRAME)
