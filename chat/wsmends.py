"""Mends for gevent-websocket 0.10.1, installed by ``patches.py``.

``MendedWebSocket`` limits message size before reading, rejects unmasked client frames,
validates UTF-8 once per message at C speed, sends real close codes and serialises writes.

Floods: while a client's bytes are buffered, reading them never waits, so the reader would
never hand the hub to anyone else (a flood of 6-byte pongs stalled the worker for seconds,
issue 11). It yields after every message and every ``YIELD_EVERY_FRAMES`` frames, always
between two frames. A message may come in at most ``max_fragments`` frames (then 1009), and
ping and pong frames are held to ``control_frames_per_second``, in bursts of
``control_frames_burst`` (then 1008). The handler sets these, like ``max_message_size``.

Closing: ``close()`` sends the close frame and leaves TCP alone, so that a reader still in
``receive()`` reads the client's close reply (RFC 6455 section 5.5.1) and returns None; the
handler then closes TCP, server first (section 7.1.1). When the reply is overdue, or a write
is stuck on a client that stopped reading, call ``shutdown()``.
"""
import logging
import socket
import struct
import time

import gevent
from gevent.lock import RLock
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.websocket import MSG_ALREADY_CLOSED, MSG_SOCKET_DEAD, Header, WebSocket

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 65536
DEFAULT_MAX_FRAGMENTS = 128
#: Ping and pong frames a second; the server and browsers ping every 20 to 25 s.
DEFAULT_CONTROL_FRAMES_PER_SECOND = 10.0
#: Frames read between two yields to the hub: a yield costs about a microsecond.
YIELD_EVERY_FRAMES = 16
TOO_MANY_FRAGMENTS = "message in too many fragments"
TOO_MANY_CONTROL_FRAMES = "too many control frames"
_OPCODES = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))  # RFC 6455 section 5.2; others reserved
_MAX_CLOSE_REASON = 123  # section 5.5: control payloads <= 125 bytes, 2 of them the code
_NO_STATUS_RECEIVED = 1005  # section 7.1.5


def mask(payload, key):
    """Return ``payload`` XOR the 4-byte ``key`` repeated (RFC 6455 section 5.3), as bytes."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def header_mask_payload(self, payload):
    """Replace ``Header.mask_payload``, a per-byte Python loop: return bytes, not bytearray.

    Like the original, assume ``len(payload) == self.length``."""
    return mask(payload, self.mask)


def create_logger(name, debug=False, format=None):
    """Return the logger ``name`` untouched (0.10.1 deletes its handlers, swaps its class)."""
    return logging.getLogger(name)


def encode_frame(payload, opcode=WebSocket.OPCODE_TEXT):
    """Build an unmasked final server frame (str payloads as UTF-8), to send to many sockets."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload)
    first = 0x80 | opcode  # FIN set, RSV bits clear (section 5.2)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def frame_payload(frame):
    """Return the payload of a frame ``encode_frame`` built (its header cut off)."""
    length = frame[1] & 0x7F
    return frame[2 if length < 126 else 4 if length == 126 else 10:]


class LimitExceeded(ProtocolError):
    """The peer went over one of our limits: close with ``code`` and ``reason``."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MendedWebSocket(WebSocket):
    """The WebSocket that ``WebSocketHandler`` builds once patched.

    ``close_code``: code of the first close frame sent or received (1005 for a peer's close
    without one), None while there was none."""

    __slots__ = ("max_message_size", "max_fragments", "control_frames_per_second",
                 "control_frames_burst", "clock", "last_received", "close_code", "_write_lock",
                 "_raw_socket", "_rest", "_control_tokens", "_control_updated", "_unyielded")

    def __init__(self, environ, stream, handler):
        super().__init__(environ, stream, handler)
        self.max_message_size = getattr(handler, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
        self.max_fragments = getattr(handler, "max_fragments", DEFAULT_MAX_FRAGMENTS)
        rate = getattr(handler, "control_frames_per_second", DEFAULT_CONTROL_FRAMES_PER_SECOND)
        self.control_frames_per_second = rate
        self.control_frames_burst = getattr(handler, "control_frames_burst", 2 * rate)
        self.clock = getattr(handler, "clock", time.monotonic)  # for the control-frame budget
        # A token bucket in two slots: an object of its own would cost every idle socket more.
        self._control_tokens = float(self.control_frames_burst)
        self._control_updated = self.clock()
        self._unyielded = 0  # frames read since the reader last yielded to the hub
        self.last_received = time.monotonic()
        self.close_code = None
        self._write_lock = RLock()  # reentrant: close() holds it around send_raw()
        # The non-blocking socket under gevent's: one send() where gevent's sendall() would also
        # ask the kernel for SO_SNDBUF and arm a timeout, for every frame (a fifth of fan-out).
        self._raw_socket = getattr(getattr(handler, "socket", None), "_sock", None)
        self._rest = None  # the unsent end of a frame send_now() began: it goes out first

    def __del__(self):
        """Do nothing: 0.10.1 sends a close frame from the garbage collector."""

    def read_frame(self, budget=None):
        """Read one frame; refuse a data frame over ``budget`` bytes before reading it."""
        stream = self.stream
        if stream is None:
            raise WebSocketError(MSG_ALREADY_CLOSED)
        try:
            header = Header.decode_header(stream)
        except FrameTooLargeException as exc:
            # A control frame over 125 bytes is a protocol error (section 5.5), not 1009.
            raise ProtocolError(str(exc)) from exc
        if header.flags:
            raise ProtocolError("RSV bits set, no extension negotiated")  # section 5.2
        if header.opcode not in _OPCODES:
            raise ProtocolError("Reserved opcode %d" % header.opcode)  # section 5.2
        if not header.mask:
            raise ProtocolError("Unmasked client frame")  # section 5.1; 0.10.1 accepts it
        if budget is None:
            budget = self.max_message_size
        if header.opcode < 0x8 and header.length > budget:
            # 0.10.1 reads any announced length, up to 2**64 - 1 bytes.
            raise FrameTooLargeException("%d-byte frame, %d left" % (header.length, budget))
        try:
            payload = stream.read(header.length)
        except OSError as exc:
            raise WebSocketError("Error reading frame payload") from exc
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        self.last_received = time.monotonic()
        return header, mask(payload, header.mask)

    def read_message(self):
        """Return the next message: str for text, bytes for binary, None after a close frame."""
        opcode = None
        fragments = []
        size = 0
        while True:
            self._pace()
            header, payload = self.read_frame(self.max_message_size - size)
            f_opcode = header.opcode
            if f_opcode == self.OPCODE_CLOSE:
                self.handle_close(header, payload)  # never refused: it ends the connection
                return None
            if f_opcode >= 0x8:
                self._spend_control_token()
                if f_opcode == self.OPCODE_PING:
                    self.handle_ping(header, payload)
                else:
                    self.handle_pong(header, payload)
                continue
            if f_opcode == self.OPCODE_CONTINUATION:
                if opcode is None:
                    raise ProtocolError("Continuation frame outside a message")  # section 5.4
            elif opcode is not None:
                raise ProtocolError("New message inside a fragmented one")  # section 5.4
            else:
                opcode = f_opcode
            if len(fragments) >= self.max_fragments:
                # Empty fragments never reach the byte limit: without this, a list without end.
                raise LimitExceeded(1009, TOO_MANY_FRAGMENTS)
            fragments.append(payload)
            size += len(payload)
            if header.fin:
                break
        self._unyielded = YIELD_EVERY_FRAMES  # the next read yields first: one message a turn
        message = b"".join(fragments)
        if opcode == self.OPCODE_TEXT:
            # Once per message: strict decoding raises UnicodeDecodeError (section 8.1).
            return message.decode("utf-8")
        return message

    def _pace(self):
        """Yield to the hub if ``YIELD_EVERY_FRAMES`` frames were read since the last yield.

        Called between frames only, so no frame is cut: a greenlet that closes the socket
        meanwhile just ends the next read."""
        if self._unyielded >= YIELD_EVERY_FRAMES:
            self._unyielded = 0
            gevent.sleep(0)
        self._unyielded += 1

    def _spend_control_token(self):
        """Spend one token of the ping and pong budget; raise LimitExceeded when there is none."""
        now = self.clock()
        refill = (now - self._control_updated) * self.control_frames_per_second
        self._control_tokens = min(self.control_frames_burst, self._control_tokens + refill) - 1
        self._control_updated = now
        if self._control_tokens < 0:
            raise LimitExceeded(1008, TOO_MANY_CONTROL_FRAMES)

    def handle_close(self, header, payload):
        """Record the peer's close code and echo it with its reason (section 5.5.1)."""
        code, reason = _NO_STATUS_RECEIVED, b""
        if payload:
            if len(payload) < 2:
                raise ProtocolError("1-byte close payload")  # section 5.5.1
            code, reason = struct.unpack_from("!H", payload)[0], payload[2:]
            reason.decode("utf-8")  # UnicodeDecodeError -> 1007 (section 5.5.1)
            if not self._is_valid_close_code(code):
                raise ProtocolError("Invalid close code %d" % code)  # section 7.4
        if self.close_code is None:
            self.close_code = code
        self.close(1000 if code == _NO_STATUS_RECEIVED else code, reason)

    def _is_valid_close_code(self, code):
        """Accept the codes a peer may send (section 7.4; IANA registry), 0.10.1 refusing
        the registered 1012-1014 and allowing the reserved 1016-2999 and undefined 5000+."""
        return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999

    def receive(self):
        """Return the next message, or None once the connection is finished; never raise."""
        if self.closed:
            return None
        try:
            return self.read_message()
        except LimitExceeded as exc:  # before ProtocolError, its base class
            logger.info("Closing with %s: %s", exc.code, exc.reason)
            self.close(exc.code, exc.reason)
        except FrameTooLargeException as exc:  # before ProtocolError, its base class
            self._fail(1009, exc)
        except UnicodeError as exc:
            self._fail(1007, exc)
        except ProtocolError as exc:
            self._fail(1002, exc)
        except OSError as exc:  # socket errors, and WebSocketError on EOF: nobody to tell
            logger.debug("Connection lost: %s", exc)
            self._release()
        return None

    def send_frame(self, message, opcode):
        """Send ``message`` (str as UTF-8, or bytes) as one frame."""
        self.send_raw(encode_frame(message, opcode))

    def send_raw(self, frame):
        """Write prebuilt frame bytes under the write lock; raise WebSocketError if closed."""
        with self._write_lock:
            if self.closed:
                raise WebSocketError(MSG_ALREADY_CLOSED)
            try:
                if self._rest is not None:
                    rest, self._rest = self._rest, None
                    self.raw_write(rest)
                if frame:
                    self._write(frame)
            except BaseException as exc:
                # A write cut short (socket error, gevent.Timeout, kill) may leave part of a
                # frame on the wire: nothing written after it could be parsed.
                self._release()
                if isinstance(exc, OSError):
                    raise WebSocketError(MSG_SOCKET_DEAD) from exc
                raise

    def send_now(self, data):
        """Write what the kernel takes of ``data`` now, never waiting (safe in a hub callback).

        Return False, writing nothing, when a write is in progress or pending: the caller
        keeps ``data`` for a writer greenlet. When the kernel takes only part, the rest is
        kept here and goes out first with the next ``send_raw()`` (``pending`` tells): no other
        frame may come between the halves of one. Raise WebSocketError if closed or dead.
        """
        if self._raw_socket is None or self._rest is not None:
            return False
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            if self.closed:
                raise WebSocketError(MSG_ALREADY_CLOSED)
            try:
                sent = self._raw_socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._release()
                raise WebSocketError(MSG_SOCKET_DEAD) from exc
            if sent < len(data):
                self._rest = memoryview(data)[sent:]
            return True
        finally:
            self._write_lock.release()

    @property
    def pending(self):
        """Tell whether the end of a frame begun by ``send_now()`` still waits to be written."""
        return self._rest is not None

    def _write(self, data):
        """Write all of ``data``: one plain send() when the kernel takes it all (the usual case)."""
        if self._raw_socket is not None:
            try:
                sent = self._raw_socket.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        self.raw_write(data)  # gevent's sendall: waits for room in the socket buffer

    def close(self, code=1000, message=b""):
        """Send one close frame with ``code`` and reason ``message``; later calls do nothing.

        0.10.1 sends the reason where the 2-byte code belongs (section 5.5.1). Socket errors
        are ignored. Waits for a write in progress: see ``shutdown()``."""
        with self._write_lock:
            if self.closed:
                return
            reason = message.encode("utf-8") if isinstance(message, str) else bytes(message or b"")
            # Cut on a code point boundary: the reason must stay UTF-8 (section 5.5.1).
            reason = reason[:_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
            try:
                self.send_raw(encode_frame(struct.pack("!H", code) + reason, self.OPCODE_CLOSE))
            except WebSocketError as exc:
                logger.debug("Close frame %s not sent: %s", code, exc)
            else:
                if self.close_code is None:
                    self.close_code = code
            finally:
                self._release()

    def shutdown(self):
        """Shut TCP down both ways, taking no lock: a blocked ``receive()`` returns None and a
        stuck write fails. For a close reply that is overdue, or a dead client."""
        sock = getattr(self.handler, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:  # already shut down or reset
                logger.debug("Socket shutdown failed: %s", exc)

    def _fail(self, code, exc):
        logger.debug("Closing with %s: %s", code, exc)
        self.close(code)

    def _release(self):
        """Mark the connection finished and drop the stream, as 0.10.1's close() does."""
        self.closed = True
        self.stream = self.raw_write = self.raw_read = None
