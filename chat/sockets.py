"""The socket session: one per WebSocket, with a reader, a bounded writer queue and keep-alive.

The reader greenlet (the view's own) parses and dispatches frames one at a time. Everything
sent to the client goes through a bounded queue drained by a writer greenlet, so a slow or
dead client never delays the others: when its queue overflows it is closed with 1013 and
comes back with ``since``. A keep-alive timer pings and drops peers that went silent.

Each session has a connection id (``<pid>-<n>``, unique in the worker's log) carried by every
line it logs; it logs one line when it opens and one when it closes, as key=value pairs.
"""
import itertools
import logging
import os
import socket
import time

import gevent
from gevent.queue import Full, Queue

from chat import handlers, metrics, protocol
from chat.errors import ChatError, UnknownType
from chat.wsmends import MendedWebSocket, encode_frame

logger = logging.getLogger(__name__)

PING_FRAME = encode_frame(b"", MendedWebSocket.OPCODE_PING)
#: Frames joined into one write when a socket's queue has a backlog.
WRITE_BATCH = 64
#: The close code of a connection that ended without a close frame (RFC 6455, 7.1.5).
ABNORMAL_CLOSURE = 1006

_serial = itertools.count(1)


def connection_id():
    """Return a new short id, unique among this worker's connections: ``<pid>-<n>``."""
    return f"{os.getpid()}-{next(_serial)}"


class Membership:
    """A session's place in one room: buffering until ``joined`` is sent, then live."""

    __slots__ = ("room_id", "last_seq", "buffer")

    def __init__(self):
        self.room_id = None
        self.last_seq = 0
        self.buffer = []  # (seq, frame) that arrived while the room was being read


class SocketSession:
    """Serve one authenticated WebSocket until it closes."""

    def __init__(self, ws, user, *, hub, limiter, queue_size, ping_interval, idle_timeout,
                 close_timeout=5.0, clock=time.monotonic):
        self.ws = ws
        self.user = user
        self.username = user.get_username()
        self.hub = hub
        self.limiter = limiter
        self.rooms = {}  # slug -> Membership
        self.close_timeout = close_timeout
        self.clock = clock
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.outbox = Queue(maxsize=queue_size)
        self.closing = False
        self._greenlets = []
        self._keepalive = None
        self.conn_id = connection_id()

    def run(self):
        """Read and dispatch frames until the peer leaves or the session is closed."""
        opened_at = self.clock()
        logger.info("socket opened conn=%s user=%s", self.conn_id, self.username)
        metrics.OPEN_SOCKETS.inc()
        try:  # from here on the finally undoes what was done: the gauge above included
            self.hub.sessions.add(self)
            self._greenlets = [gevent.spawn(self._write_loop)]
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
            metrics.OPEN_SOCKETS.dec()
            for slug in list(self.rooms):
                self.unsubscribe(slug)
            gevent.killall(self._greenlets, block=False)
            if self._keepalive is not None:
                self._keepalive.close()  # its callback holds this session
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
        held, membership.buffer = membership.buffer, None
        for held_seq, frame in held:
            self.deliver(slug, held_seq, frame)

    def unsubscribe(self, slug):
        """Stop receiving ``slug``'s events and end this socket's presence there."""
        if self.rooms.pop(slug, None) is not None:
            self.hub.detach(self, slug)

    def deliver(self, slug, seq, frame):
        """Take a room's event from the hub: each seq once, in order, after ``joined``.

        Tell whether it was queued (or held back until ``joined``) for this client.
        """
        membership = self.rooms.get(slug)
        if membership is None:
            return False
        if membership.buffer is not None:
            membership.buffer.append((seq, frame))
            if len(membership.buffer) > self.outbox.maxsize:
                self.close(1013, "too slow: reconnect and resume with since")
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
        try:
            self.outbox.put_nowait(frame)
        except Full:
            logger.warning("send queue overflowed conn=%s user=%s events=%s: closing with 1013",
                           self.conn_id, self.username, self.outbox.maxsize)
            self.close(1013, "too slow: reconnect and resume with since")
            return False
        return True

    def close(self, code, reason=""):
        """Close with ``code`` after the frame being written; drop what is still queued."""
        if self.closing:
            return
        self.closing = True
        if code == 1013:
            metrics.SEND_QUEUE_OVERFLOWS.inc()
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait((code, reason))  # fits: the queue was just emptied
        # A peer that never reads or never answers is cut off after CLOSE_TIMEOUT.
        self._greenlets.append(gevent.spawn_later(self.close_timeout, self.ws.shutdown))

    def _write_loop(self):
        outbox = self.outbox
        while True:
            item = outbox.get()
            if outbox.qsize() and not isinstance(item, tuple):
                item = self._coalesce(item)
            if isinstance(item, tuple):
                code, reason = item
                self.ws.close(code, reason)
                logger.info("sent close conn=%s user=%s code=%s reason=%r",
                            self.conn_id, self.username, code, reason)
                return
            try:
                self.ws.send_raw(item)
            except OSError:
                self.ws.shutdown()
                return

    def _coalesce(self, frame, most=WRITE_BATCH):
        """Join ``frame`` with the frames queued behind it: one write for a burst, not one each.

        Stops before a close (a tuple), which the loop then handles on its own.
        """
        outbox, frames = self.outbox, [frame]
        while outbox.qsize() and len(frames) < most and not isinstance(outbox.peek_nowait(), tuple):
            frames.append(outbox.get_nowait())
        return b"".join(frames)

    def _linger(self):
        """End TCP politely: FIN after our close frame, then drain the peer until it closes.

        Closing a socket with unread input makes the kernel send RST, which can destroy our
        close frame before the client reads it (a client closed with 1009 is usually still
        sending its payload). Same idea as nginx's lingering_close.
        """
        sock = getattr(self.ws.handler, "socket", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(self.close_timeout, False):
                while sock.recv(65536):
                    pass
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


def close_all(code, reason):
    """Close every open session of this worker with ``code``."""
    from chat import runtime

    hub = runtime.current_hub()
    sessions = list(hub.sessions) if hub is not None else []
    for session in sessions:
        session.close(code, reason)
    logger.info("closing %s sockets with %s", len(sessions), code)


def going_away_handler(previous):
    """Wrap a signal handler so that every socket gets a 1001 close frame first.

    On SIGTERM gunicorn waits ``graceful_timeout`` for the pool to drain, but sockets never
    drain: they would be dropped without a close frame and clients could not tell a restart
    from a network fault (PROTOCOL.md: 1001, then reconnect with ``since``).
    """
    def handler(signum, frame):
        # Blocking work does not belong in a signal handler (gunicorn #1126): use a greenlet.
        gevent.spawn(close_all, 1001, "server going away")
        if callable(previous):
            previous(signum, frame)

    return handler
