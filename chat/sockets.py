"""The WebSocket transport: a client session (chat/session.py) read and written over a socket.

The reader greenlet (the handler's own) parses and dispatches frames one at a time.
Everything sent to the client goes through the session's outbox. A hub callback writes it
once per turn of the event loop (what was queued meanwhile joined into one write) without
waiting; only a socket the kernel cannot take it all from gets a writer greenlet, until its
backlog is gone. So a slow or dead client never delays the others (when its outbox overflows
it is closed with 1013 and comes back with ``since``), and an idle socket costs no greenlet but
its reader. A keep-alive timer pings and drops peers that went silent.
"""
import logging
import socket
import time

import gevent

from chat.authority import TOO_MANY_SOCKETS
from chat.outbox import flusher
from chat.session import ClientSession, too_many_reason
from chat.wsmends import MendedWebSocket, WebSocketError, encode_frame

logger = logging.getLogger(__name__)

PING_FRAME = encode_frame(b"", MendedWebSocket.OPCODE_PING)
#: Bytes of queued frames joined into one write when a socket's outbox has a backlog.
WRITE_BATCH_BYTES = 256 * 1024
#: The most of a peer's input read and dropped after our close frame; more gets a reset.
LINGER_BYTES = 1 << 20
#: The close code of a connection that ended without a close frame (RFC 6455, 7.1.5).
ABNORMAL_CLOSURE = 1006


class SocketSession(ClientSession):
    """Serve one authenticated WebSocket until it closes."""

    kind = "socket"
    log = logger

    def __init__(self, ws, user, *, hub, limiter, authority, session_key, budgets,
                 ping_interval, idle_timeout, close_timeout=5.0, clock=time.monotonic):
        super().__init__(user, hub=hub, limiter=limiter, authority=authority,
                         session_key=session_key, budgets=budgets, clock=clock)
        self.ws = ws
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self._close_timer = None  # cuts off a peer that does not answer our close
        self._writer = None  # a greenlet while the outbox has a backlog the kernel did not take
        self._flush_due = False  # a hub callback will write the outbox
        self._keepalive = None

    def run(self, expires_at=None):
        """Read and dispatch frames until the peer leaves or the session is closed."""
        if not self.open(expires_at):
            self.ws.close(TOO_MANY_SOCKETS, too_many_reason(self.authority.per_user))
            self._linger()
            return
        try:  # from here on the finally undoes what open() did
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
            if self._writer is not None:
                self._writer.kill(block=False)
            if self._close_timer is not None:
                self._close_timer.close()
            if self._keepalive is not None:
                self._keepalive.close()  # its callback holds this session
            self.finish(self.ws.close_code or ABNORMAL_CLOSURE)
            self._linger()

    def close(self, code, reason="", farewell=None):
        """Close with ``code`` after the frame being written (and ``farewell``); a peer that
        never reads or never answers is cut off after ``close_timeout``."""
        if self.closing:
            return
        super().close(code, reason, farewell)
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
