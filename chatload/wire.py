"""A minimal client WebSocket (RFC 6455) over a gevent socket, built for receiving fast.

Server frames are parsed straight out of one growing buffer, many per ``recv``: a general
client library spends most of its time per frame, and the load client must never be what
limits a benchmark.
"""
import base64
import json
import os
import re
import struct

from gevent import socket

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RECV_SIZE = 262144


class HandshakeError(Exception):
    """The server refused the upgrade; ``status`` is its HTTP status (0 when there was none)."""

    def __init__(self, status, detail, retry_after=None):
        super().__init__(f"handshake failed ({status}): {detail}")
        self.status = status
        self.retry_after = retry_after  # seconds, from a 503's Retry-After header


RETRY_AFTER = re.compile(rb"\r\nretry-after: *(\d+)", re.IGNORECASE)


class Closed(Exception):
    """The connection ended; ``code`` is the close code (1006 when there was no close frame)."""

    def __init__(self, code):
        super().__init__(f"closed with {code}")
        self.code = code


def open_socket(host, port, path, cookie=None, timeout=30):
    """Connect and upgrade; return (socket, bytes already read past the handshake)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, rest = _read_head(sock)
    except (OSError, HandshakeError):
        sock.close()
        raise
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if status != 101:
        sock.close()
        retry_after = RETRY_AFTER.search(head)
        raise HandshakeError(status, head.split(b"\r\n", 1)[0].decode("latin-1"),
                             int(retry_after.group(1)) if retry_after else None)
    sock.settimeout(None)
    return sock, rest


def _read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError(0, "the server closed the connection during the handshake")
        data += chunk
        if len(data) > 65536:
            raise HandshakeError(0, "response headers over 64 KiB")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def frame(opcode, payload):
    """Return one masked client frame (RFC 6455 section 5.3: clients always mask)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
    return header + mask + masked


def parse(buffer):
    """Take complete frames off the front of ``buffer`` (a bytearray); return [(opcode, payload)]."""
    frames, pos, size = [], 0, len(buffer)
    while size - pos >= 2:
        first, second = buffer[pos], buffer[pos + 1]
        length, start = second & 0x7F, pos + 2
        if length == 126:
            if size - pos < 4:
                break
            length, start = int.from_bytes(buffer[pos + 2:pos + 4], "big"), pos + 4
        elif length == 127:
            if size - pos < 10:
                break
            length, start = int.from_bytes(buffer[pos + 2:pos + 10], "big"), pos + 10
        if second & 0x80:
            raise Closed(1002)  # RFC 6455 section 5.1: a server must not mask
        if size - start < length:
            break
        frames.append((first, bytes(buffer[start:start + length])))
        pos = start + length
    del buffer[:pos]
    return frames


# A `message` event's fields, found without decoding the whole JSON (json.loads was most of
# the client's time). An escaped quote inside a string can't end in `"seq":`, so a body can't fool these.
MESSAGE_STARTS = (b'{"type":"message"', b'{"type": "message"', b'42["message"')
SEQ = re.compile(rb'"seq": ?(\d+)')
SENT = re.compile(rb'"body": ?"lt ([0-9.]+) ')
REF = re.compile(rb'"ref": ?"([^"\\]*)"')


def message_fields(payload):
    """Return (seq, scheduled send time or None, ref or None) of a `message` frame, else None."""
    if not payload.startswith(MESSAGE_STARTS):
        return None
    seq = SEQ.search(payload)
    if seq is None:
        return None
    sent, ref = SENT.search(payload), REF.search(payload)
    return (int(seq.group(1)), float(sent.group(1)) if sent else None,
            ref.group(1).decode() if ref else None)


class Dialect:
    """How JSON objects travel: one per text frame (our protocol)."""

    name = "chat"

    def encode(self, obj):
        return json.dumps(obj, separators=(",", ":")).encode()

    def decode(self, text):
        """Return the object in ``text``, or None for transport chatter; may return a reply."""
        return json.loads(text), None

    def greet(self, conn):
        """Finish the session set-up after the upgrade."""


class SocketIODialect(Dialect):
    """Socket.IO events over Engine.IO 4 (Flask-SocketIO's wire format), for comparisons."""

    name = "socketio"

    def encode(self, obj):
        return b"42" + json.dumps([obj["type"], obj], separators=(",", ":")).encode()

    def decode(self, text):
        if text[:2] == b"42":
            return json.loads(text[2:])[1], None
        if text == b"2":  # Engine.IO ping: answer pong, or the server drops us
            return None, b"3"
        return None, None

    def greet(self, conn):
        conn.send_raw(b"40")


DIALECTS = {"chat": Dialect(), "socketio": SocketIODialect()}
