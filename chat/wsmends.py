"""Mends for gevent-websocket 0.10.1, installed by ``patches.py``.

``MendedWebSocket`` enforces a message size limit before reading, rejects unmasked client
frames, validates UTF-8 once per message at C speed, sends real close codes and serialises
writes. ``header_mask_payload`` and ``create_logger`` replace their 0.10.1 namesakes.

Closing: ``close()`` sends the close frame and leaves TCP alone, so that a reader still in
``receive()`` reads the client's close reply (RFC 6455 section 5.5.1) and returns None; the
handler then closes TCP, server first (section 7.1.1). When the client does not reply in
time, or a writer is stuck on a client that stopped reading, call ``shutdown()``.
"""
import logging
import socket
import struct
import time

from gevent.lock import RLock
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.websocket import MSG_ALREADY_CLOSED, MSG_SOCKET_DEAD, Header, WebSocket

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 65536
_OPCODES = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))  # RFC 6455 section 5.2
_MAX_CLOSE_REASON = 123  # RFC 6455 section 5.5: control payloads <= 125, 2 of them the code
_NO_STATUS_RECEIVED = 1005  # RFC 6455 section 7.1.5


def mask(payload, key):
    """Return ``payload`` XOR the 4-byte ``key`` repeated (RFC 6455 section 5.3), as bytes."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def header_mask_payload(self, payload):
    """Mask or unmask ``payload`` with this header's key; return bytes, not 0.10.1's bytearray.

    0.10.1 XORs byte by byte in Python, about 36 ms of hub time per 64 KiB frame.
    Like the original, assume ``len(payload) == self.length``.
    """
    return mask(payload, self.mask)


def create_logger(name, debug=False, format=None):
    """Return the logger ``name`` untouched; ``debug`` and ``format`` are ignored.

    0.10.1 deletes the handlers already on the logger and swaps its class.
    """
    return logging.getLogger(name)


def encode_frame(payload, opcode=WebSocket.OPCODE_TEXT):
    """Build an unmasked, final server frame; str payloads are encoded as UTF-8.

    Build a broadcast once and hand the same bytes to each socket's ``send_raw()``.
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload)
    first = 0x80 | opcode  # FIN, no RSV bits (RFC 6455 section 5.2)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


class MendedWebSocket(WebSocket):
    """The WebSocket that ``geventwebsocket.handler.WebSocketHandler`` builds once patched.

    ``close_code`` is the code of the first close frame sent or received (1005 for a peer's
    close without a code); it stays None when the connection ended without one.
    """

    __slots__ = ("max_message_size", "last_received", "close_code", "_write_lock")

    def __init__(self, environ, stream, handler):
        super().__init__(environ, stream, handler)
        self.max_message_size = getattr(handler, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
        self.last_received = time.monotonic()
        self.close_code = None
        # Reentrant: close() holds it across its closed check and its send_raw().
        self._write_lock = RLock()

    def __del__(self):
        """Do nothing: 0.10.1 sends a close frame from the garbage collector."""

    def read_frame(self, budget=None):
        """Read one frame, refusing a data frame longer than ``budget`` before reading it."""
        stream = self.stream
        if stream is None:
            raise WebSocketError(MSG_ALREADY_CLOSED)
        try:
            header = Header.decode_header(stream)
        except FrameTooLargeException as exc:
            # RFC 6455 section 5.5: an oversized control frame is a protocol error, not 1009.
            raise ProtocolError(str(exc)) from exc
        if header.flags:
            raise ProtocolError("RSV bits set without a negotiated extension")  # 5.2
        if header.opcode not in _OPCODES:
            raise ProtocolError("Reserved opcode %d" % header.opcode)  # 5.2
        if not header.mask:
            raise ProtocolError("Unmasked client frame")  # 5.1; 0.10.1 accepts it
        if budget is None:
            budget = self.max_message_size
        if header.opcode < 0x8 and header.length > budget:
            # 0.10.1 reads whatever length is announced, up to 2**64 - 1 bytes.
            raise FrameTooLargeException(
                "Frame of %d bytes exceeds the message budget of %d" % (header.length, budget))
        payload = b""
        if header.length:
            try:
                payload = stream.read(header.length)
            except OSError as exc:
                raise WebSocketError("Error reading frame payload") from exc
            if len(payload) != header.length:
                raise WebSocketError("Unexpected EOF reading frame payload")
            payload = mask(payload, header.mask)
        self.last_received = time.monotonic()
        return header, payload

    def read_message(self):
        """Return the next message: str for text, bytes for binary, None for a close frame."""
        opcode = None
        fragments = []
        size = 0
        while True:
            header, payload = self.read_frame(self.max_message_size - size)
            f_opcode = header.opcode
            if f_opcode == self.OPCODE_PING:
                self.handle_ping(header, payload)
                continue
            if f_opcode == self.OPCODE_PONG:
                self.handle_pong(header, payload)
                continue
            if f_opcode == self.OPCODE_CLOSE:
                self.handle_close(header, payload)
                return None
            if f_opcode == self.OPCODE_CONTINUATION:
                if opcode is None:
                    raise ProtocolError("Continuation frame without a message")  # 5.4
            elif opcode is not None:
                raise ProtocolError("New message inside a fragmented one")  # 5.4
            else:
                opcode = f_opcode
            fragments.append(payload)
            size += len(payload)
            if header.fin:
                break
        message = b"".join(fragments)
        if opcode == self.OPCODE_TEXT:
            # Strict decode raises UnicodeDecodeError on invalid or truncated UTF-8 (8.1).
            return message.decode("utf-8")
        return message

    def handle_close(self, header, payload):
        """Record the peer's close code and echo it back (RFC 6455 section 5.5.1)."""
        if not payload:
            if self.close_code is None:
                self.close_code = _NO_STATUS_RECEIVED
            self.close()
            return
        if len(payload) < 2:
            raise ProtocolError("Close frame with a 1-byte payload")  # 5.5.1
        code = struct.unpack_from("!H", payload)[0]
        reason = payload[2:]
        reason.decode("utf-8")  # UnicodeDecodeError -> 1007 (5.5.1, 8.1)
        if not self._is_valid_close_code(code):
            raise ProtocolError("Invalid close code %d" % code)  # 7.4
        if self.close_code is None:
            self.close_code = code
        self.close(code, reason)

    def receive(self):
        """Return the next message, or None once the connection is finished; never raise."""
        if self.closed:
            return None
        try:
            return self.read_message()
        except FrameTooLargeException as exc:  # before ProtocolError, its base class
            logger.debug("Closing with 1009: %s", exc)
            self.close(1009)
        except UnicodeError as exc:
            logger.debug("Closing with 1007: %s", exc)
            self.close(1007)
        except ProtocolError as exc:
            logger.debug("Closing with 1002: %s", exc)
            self.close(1002)
        except OSError as exc:  # socket errors, and WebSocketError on EOF
            logger.debug("Connection lost: %s", exc)
            self._release()
        return None

    def send_frame(self, message, opcode):
        """Send ``message`` (str as UTF-8, or bytes) as one frame, under the write lock."""
        self.send_raw(encode_frame(message, opcode))

    def send_raw(self, frame):
        """Write prebuilt frame bytes under the write lock; raise WebSocketError when closed."""
        with self._write_lock:
            if self.closed:
                raise WebSocketError(MSG_ALREADY_CLOSED)
            try:
                self.raw_write(frame)
            except BaseException as exc:
                # A write cut short (socket error, gevent.Timeout, kill) may leave part of a
                # frame on the wire: nothing sent after it could be parsed.
                self._release()
                if isinstance(exc, OSError):
                    raise WebSocketError(MSG_SOCKET_DEAD) from exc
                raise

    def close(self, code=1000, message=b""):
        """Send a close frame with ``code`` and ``message`` once, then mark the socket closed.

        0.10.1 sends the reason where the 2-byte code belongs (RFC 6455 section 5.5.1).
        Socket errors are ignored. May wait for a write in progress; see ``shutdown()``.
        """
        with self._write_lock:
            if self.closed:
                return
            reason = message.encode("utf-8") if isinstance(message, str) else bytes(message or b"")
            # Cut on a code point boundary: the reason must stay valid UTF-8 (5.5.1).
            reason = reason[:_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
            try:
                self.send_raw(encode_frame(struct.pack("!H", code) + reason, self.OPCODE_CLOSE))
            except WebSocketError as exc:
                logger.debug("Could not send close frame %s: %s", code, exc)
            else:
                if self.close_code is None:
                    self.close_code = code
            finally:
                self._release()

    def shutdown(self):
        """Shut the TCP connection down both ways without sending anything.

        Wakes a greenlet blocked in ``receive()`` (it returns None) and fails a write stuck
        on a client that stopped reading. Takes no lock. Call it after ``close()`` when the
        client's close reply is overdue, or instead of it for a dead client.
        """
        sock = getattr(self.handler, "socket", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:  # already shut down or reset
            logger.debug("Socket shutdown failed: %s", exc)

    def _release(self):
        """Mark the connection finished and drop the stream, as 0.10.1's close() does."""
        self.closed = True
        self.stream = self.raw_write = self.raw_read = None
