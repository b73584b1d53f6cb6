"""Tests of ``chat.wsmends`` over real sockets, against an in-process gevent WebSocket server.

``patches`` (loaded by pytest.ini) has installed ``MendedWebSocket`` as the class the handler
builds. Clients are raw sockets, to send frames a browser never would, and websocket-client,
to see close frames the way a real client does.
"""
import base64
import importlib.util
import logging
import os
import socket
import struct

import gevent
import gevent.queue
import pytest
import websocket
from gevent.pywsgi import WSGIServer
from geventwebsocket import handler as gws_handler
from geventwebsocket import logging as gws_logging
from geventwebsocket import websocket as gws_websocket
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.utf8validator import Utf8Validator
from hypothesis import given, strategies as st

from chat import wsmends
from chat.wsmends import (DEFAULT_CONTROL_FRAMES_PER_SECOND, DEFAULT_MAX_FRAGMENTS,
                          DEFAULT_MAX_MESSAGE_SIZE, YIELD_EVERY_FRAMES, MendedWebSocket,
                          encode_frame)

TIMEOUT = 5  # seconds; bounds every wait
SMALL_LIMIT = 1024
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def _load_pristine_websocket_module():
    """Load a second, unpatched copy of geventwebsocket/websocket.py (the reference)."""
    origin = importlib.util.find_spec("geventwebsocket.websocket").origin
    spec = importlib.util.spec_from_file_location("geventwebsocket._pristine_websocket", origin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ORIGINAL_MASK_PAYLOAD = _load_pristine_websocket_module().Header.mask_payload


class EchoServer:
    """Echo messages; on the text ``close:<code>:<reason>`` close with that code and reason."""

    def __init__(self, **limits):
        """``limits``: attributes of the handler, as chat/worker.py sets them."""
        handler_class = WebSocketHandler
        if limits:
            handler_class = type("LimitedHandler", (WebSocketHandler,), limits)
        self.sockets = gevent.queue.Queue()  # each connection's server-side WebSocket
        self.outcomes = gevent.queue.Queue()  # None when a receive loop ended, else its exception
        self.server = WSGIServer(("127.0.0.1", 0), self.app, handler_class=handler_class, log=None)
        self.server.start()
        self.port = self.server.server_port

    def app(self, environ, start_response):
        ws = environ["wsgi.websocket"]
        self.sockets.put(ws)
        try:
            while (message := ws.receive()) is not None:
                if isinstance(message, str) and message.startswith("close:"):
                    code, _, reason = message[len("close:"):].partition(":")
                    ws.close(int(code), reason)
                else:
                    ws.send(message)
        except BaseException as exc:
            self.outcomes.put(exc)
            raise
        self.outcomes.put(None)
        return []

    def next_socket(self):
        return self.sockets.get(timeout=TIMEOUT)

    def next_outcome(self):
        return self.outcomes.get(timeout=TIMEOUT)


class RawClient:
    """A WebSocket client over a plain socket that sends whatever frames it is told to."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.rfile = self.sock.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        request = (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall((request % (port, key)).encode("ascii"))
        status = self.rfile.readline()
        assert status.startswith(b"HTTP/1.1 101"), status
        while self.rfile.readline() not in (b"\r\n", b""):
            pass

    def send_header(self, opcode, length, fin=True, masked=True, rsv=0):
        """Send a frame header only; return its masking key (None when unmasked)."""
        second = 0x80 if masked else 0
        if length < 126:
            header = struct.pack("!BB", fin << 7 | rsv | opcode, second | length)
        elif length <= 0xFFFF:
            header = struct.pack("!BBH", fin << 7 | rsv | opcode, second | 126, length)
        else:
            header = struct.pack("!BBQ", fin << 7 | rsv | opcode, second | 127, length)
        key = os.urandom(4) if masked else None
        self.sock.sendall(header + (key or b""))
        return key

    def send_frame(self, payload, opcode=TEXT, fin=True, masked=True, rsv=0):
        key = self.send_header(opcode, len(payload), fin=fin, masked=masked, rsv=rsv)
        self.sock.sendall(wsmends.mask(payload, key) if masked else payload)

    def send_close(self, code, reason=b""):
        self.send_frame(struct.pack("!H", code) + reason, CLOSE)

    def recv_frame(self):
        """Return (fin, opcode, payload) of the next server frame."""
        first, second = struct.unpack("!BB", self._read(2))
        assert not second & 0x80, "server frames must not be masked (RFC 6455 5.1)"
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return bool(first & 0x80), first & 0x0F, self._read(length)

    def recv_close(self):
        """Return (code, reason) of the next frame, which must be a close frame."""
        _, opcode, payload = self.recv_frame()
        assert opcode == CLOSE, (opcode, payload[:50])
        return struct.unpack("!H", payload[:2])[0], payload[2:]

    def at_eof(self):
        return self.rfile.read(1) == b""

    def close(self):
        self.rfile.close()
        self.sock.close()

    def _read(self, n):
        data = self.rfile.read(n)
        assert len(data) == n, "connection ended after %d of %d bytes" % (len(data), n)
        return data


@pytest.fixture
def small():
    server = EchoServer(max_message_size=SMALL_LIMIT)
    yield server
    server.server.stop(timeout=1)


@pytest.fixture
def default():
    server = EchoServer()
    yield server
    server.server.stop(timeout=1)


@pytest.fixture
def raw(small):
    client = RawClient(small.port)
    yield client
    client.close()


def ws_client(port):
    return websocket.create_connection("ws://127.0.0.1:%d/" % port, timeout=TIMEOUT)


def client_close_frame(client):
    """Return (code, reason) of the next frame websocket-client receives, a valid close frame.

    ``recv_frame`` checks the close code and reason as ``recv`` does, without replying: the
    reply can meet a reset after 1009, since the server never reads the oversized payload.
    """
    frame = client.recv_frame()
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    return struct.unpack("!H", frame.data[:2])[0], frame.data[2:]


def wait_until(predicate):
    with gevent.Timeout(TIMEOUT):
        while not predicate():
            gevent.sleep(0.01)


# Installation


def test_patches_install_the_mends():
    assert gws_handler.WebSocket is MendedWebSocket
    assert gws_websocket.Header.mask_payload is wsmends.header_mask_payload
    assert gws_websocket.Header.unmask_payload is wsmends.header_mask_payload
    assert gws_handler.create_logger is gws_logging.create_logger is wsmends.create_logger


def test_max_message_size_comes_from_the_handler(small, default):
    for server, limit in ((small, SMALL_LIMIT), (default, DEFAULT_MAX_MESSAGE_SIZE)):
        client = RawClient(server.port)
        assert server.next_socket().max_message_size == limit
        client.close()


# Close codes as a real client sees them


@pytest.mark.parametrize("code, reason", [(4401, "unauthorized"), (1001, "server restart")])
def test_client_sees_application_close_code_and_reason(small, code, reason):
    client = ws_client(small.port)
    client.send("close:%d:%s" % (code, reason))
    assert client_close_frame(client) == (code, reason.encode())
    assert small.next_socket().close_code == code
    client.close()


def test_client_sees_1009_for_a_message_over_the_limit(small):
    client = ws_client(small.port)
    client.send("x" * (SMALL_LIMIT + 1))
    assert client_close_frame(client) == (1009, b"")
    client.close()


def test_close_reason_is_cut_to_125_bytes_on_a_code_point_boundary(small):
    client = ws_client(small.port)
    small.next_socket().close(4000, "é" * 100)  # 200 bytes of UTF-8
    assert client_close_frame(client) == (4000, ("é" * 61).encode())  # 2 + 122 bytes
    client.close()


# Size limit, checked before the payload is read


@pytest.mark.parametrize("length", [SMALL_LIMIT + 1, 2**16, 2**63 - 1])
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_announced_length_over_the_limit_gets_1009_before_any_payload(small, raw, opcode, length):
    raw.sock.settimeout(2)
    raw.send_header(opcode, length)
    assert raw.recv_close() == (1009, b"")
    assert small.next_outcome() is None


def test_fragments_over_the_limit_together_get_1009_though_each_is_below_it(raw):
    raw.send_frame(b"a" * 400, TEXT, fin=False)
    raw.send_frame(b"b" * 400, CONTINUATION, fin=False)
    raw.send_frame(b"c" * 400, CONTINUATION)
    assert raw.recv_close() == (1009, b"")


def test_fragments_adding_up_to_the_limit_echo_whole_and_control_frames_do_not_count(raw):
    raw.send_frame(b"a" * 1000, TEXT, fin=False)
    raw.send_frame(b"p" * 125, PING)
    raw.send_frame(b"b" * 24, CONTINUATION)
    assert raw.recv_frame() == (True, PONG, b"p" * 125)
    assert raw.recv_frame() == (True, TEXT, b"a" * 1000 + b"b" * 24)


def test_message_at_the_default_64k_limit_echoes_and_one_byte_more_gets_1009(default):
    client = ws_client(default.port)
    text = "é" * (DEFAULT_MAX_MESSAGE_SIZE // 2)
    client.send(text)
    assert client.recv() == text
    client.send_binary(b"\0" * (DEFAULT_MAX_MESSAGE_SIZE + 1))
    assert client_close_frame(client) == (1009, b"")
    client.close()


# Protocol errors: 1002


def test_unmasked_client_frame_gets_1002(small, raw):
    raw.send_frame(b"hello", masked=False)
    assert raw.recv_close() == (1002, b"")
    assert small.next_outcome() is None


@pytest.mark.parametrize("frames", [
    pytest.param([(b"x", TEXT, True, 0x40)], id="rsv1-bit"),
    pytest.param([(b"x", 0x3, True, 0)], id="reserved-data-opcode"),
    pytest.param([(b"x", 0xB, True, 0)], id="reserved-control-opcode"),
    pytest.param([(b"x", CONTINUATION, True, 0)], id="continuation-without-message"),
    pytest.param([(b"a", TEXT, False, 0), (b"b", TEXT, True, 0)], id="text-inside-fragments"),
    pytest.param([(b"p", PING, False, 0)], id="fragmented-ping"),
    pytest.param([(b"p" * 126, PING, True, 0)], id="ping-over-125-bytes"),
])
def test_protocol_violation_gets_1002(raw, frames):
    for payload, opcode, fin, rsv in frames:
        raw.send_frame(payload, opcode, fin=fin, rsv=rsv)
    assert raw.recv_close() == (1002, b"")


# UTF-8: 1007


@pytest.mark.parametrize("fragments", [
    pytest.param([b"\xff"], id="invalid-byte"),
    pytest.param([b"\xc0\xaf"], id="overlong"),
    pytest.param([b"\xed\xa0\x80"], id="surrogate"),
    pytest.param([b"abc\xe2\x82"], id="truncated-code-point"),
    pytest.param([b"ok", b"\xe2\x82", b"A"], id="split-invalid"),
    pytest.param([b"\xe2\x82", b"\xac", b"\xe2"], id="truncated-in-last-fragment"),
])
def test_invalid_utf8_text_gets_1007(raw, fragments):
    for i, fragment in enumerate(fragments):
        raw.send_frame(fragment, CONTINUATION if i else TEXT, fin=i == len(fragments) - 1)
    assert raw.recv_close() == (1007, b"")


def test_fragmented_text_echoes_whole_with_a_code_point_split_across_fragments(raw):
    for i, fragment in enumerate([b"caf", b"\xc3", b"\xa9 \xe2\x82", b"\xac"]):
        raw.send_frame(fragment, CONTINUATION if i else TEXT, fin=i == 3)
    assert raw.recv_frame() == (True, TEXT, "café €".encode())


def test_binary_message_is_not_utf8_checked_and_echoes_as_bytes(raw):
    raw.send_frame(b"\xff\x00", BINARY)
    assert raw.recv_frame() == (True, BINARY, b"\xff\x00")


# Control frames


def test_ping_gets_pong_with_the_same_payload(raw):
    raw.send_frame(b"are you there?", PING)
    assert raw.recv_frame() == (True, PONG, b"are you there?")


def test_every_frame_received_updates_last_received_pongs_included(small, raw):
    ws = small.next_socket()
    before = ws.last_received
    gevent.sleep(0.02)
    raw.send_frame(b"", PONG)
    wait_until(lambda: ws.last_received > before)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1013, 1014, 3000, 4000, 4999])
def test_peer_close_is_echoed_with_its_code_and_ends_receive(small, raw, code):
    raw.send_close(code, b"bye")
    assert raw.recv_close() == (code, b"bye")
    assert small.next_outcome() is None
    assert small.next_socket().close_code == code


def test_peer_close_without_code_is_answered_with_1000_and_recorded_as_1005(small, raw):
    raw.send_frame(b"", CLOSE)
    assert raw.recv_close() == (1000, b"")
    assert small.next_socket().close_code == 1005


@pytest.mark.parametrize("payload, code", [
    pytest.param(b"\x03", 1002, id="one-byte-payload"),
    pytest.param(struct.pack("!H", 999), 1002, id="code-999"),
    pytest.param(struct.pack("!H", 1005), 1002, id="code-1005"),
    pytest.param(struct.pack("!H", 1015), 1002, id="code-1015"),
    pytest.param(struct.pack("!H", 2000), 1002, id="code-2000"),
    pytest.param(struct.pack("!H", 5000), 1002, id="code-5000"),
    pytest.param(struct.pack("!H", 1000) + b"\xff", 1007, id="invalid-utf8-reason"),
])
def test_invalid_peer_close_gets_the_matching_code(raw, payload, code):
    raw.send_frame(payload, CLOSE)
    assert raw.recv_close() == (code, b"")


# Floods: fragments per message, control frames per second, yields to the hub


class FakeClock:
    """The control-frame budget's clock, moved by the test only."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def budgeted(clock):
    """4 fragments a message; 2 control frames a second, 3 at once, on the fake clock."""
    server = EchoServer(max_fragments=4, control_frames_per_second=2.0, control_frames_burst=3,
                        clock=clock)
    yield server
    server.server.stop(timeout=1)


@pytest.fixture
def unlimited():
    """Limits out of reach: only the yields are left to watch."""
    server = EchoServer(max_fragments=10**9, control_frames_per_second=1e9)
    yield server
    server.server.stop(timeout=1)


def frame_bytes(payload, opcode=TEXT, fin=True):
    """A masked client frame of up to 125 bytes, as bytes: to send many in one write."""
    key = os.urandom(4)
    head = struct.pack("!BB", fin << 7 | opcode, 0x80 | len(payload))
    return head + key + wsmends.mask(payload, key)


def fragments(parts, opcode=TEXT, between=b""):
    """One message in ``parts``, with the bytes ``between`` after each fragment but the last."""
    last = len(parts) - 1
    return b"".join(frame_bytes(part, CONTINUATION if i else opcode, fin=i == last)
                    + (between if i < last else b"") for i, part in enumerate(parts))


def test_limits_come_from_the_handler_with_defaults_for_a_plain_one(default, budgeted):
    RawClient(default.port).close()
    ws = default.next_socket()
    assert (ws.max_fragments, ws.control_frames_per_second, ws.control_frames_burst) == (
        DEFAULT_MAX_FRAGMENTS, DEFAULT_CONTROL_FRAMES_PER_SECOND, 20.0)
    assert (DEFAULT_MAX_FRAGMENTS, DEFAULT_CONTROL_FRAMES_PER_SECOND) == (128, 10.0)
    RawClient(budgeted.port).close()
    ws = budgeted.next_socket()
    assert (ws.max_fragments, ws.control_frames_per_second, ws.control_frames_burst) == (4, 2.0, 3)


def test_message_in_the_most_fragments_echoes_whole_and_one_more_gets_1009(budgeted):
    client = RawClient(budgeted.port)
    client.sock.sendall(fragments([b"a", b"b", b"", b"c"]))
    assert client.recv_frame() == (True, TEXT, b"abc")
    client.sock.sendall(fragments([b"a", b"b", b"", b"c", b"d"]))
    assert client.recv_close() == (1009, b"message in too many fragments")
    assert budgeted.next_outcome() is None
    client.close()


def test_endless_empty_continuations_get_1009_after_the_default_128_fragments(default):
    client = RawClient(default.port)
    client.sock.sendall(fragments([b"["] + [b""] * 126 + [b"]"]))  # 128 fragments
    assert client.recv_frame() == (True, TEXT, b"[]")
    empty = frame_bytes(b"", CONTINUATION, fin=False)
    client.sock.sendall(frame_bytes(b"[", fin=False) + empty * 1000)
    assert client.recv_close() == (1009, b"message in too many fragments")
    assert default.next_outcome() is None
    client.close()


def test_control_frames_between_fragments_do_not_count_as_fragments(budgeted):
    client = RawClient(budgeted.port)
    client.sock.sendall(fragments([b"a", b"b", b"c", b"d"], between=frame_bytes(b"p", PONG)))
    assert client.recv_frame() == (True, TEXT, b"abcd")
    client.close()


@pytest.mark.parametrize("opcode", [PING, PONG])
def test_control_frames_beyond_the_burst_get_1008(budgeted, opcode):
    client = RawClient(budgeted.port)
    client.sock.sendall(frame_bytes(b"x", opcode) * 4)
    if opcode == PING:
        assert [client.recv_frame() for _ in range(3)] == [(True, PONG, b"x")] * 3
    assert client.recv_close() == (1008, b"too many control frames")
    assert budgeted.next_outcome() is None
    client.close()


def test_control_budget_refills_at_its_rate_up_to_the_burst(budgeted, clock):
    client = RawClient(budgeted.port)
    for advance, pings in [(0, 3), (1.0, 2), (0.5, 1), (3600, 3)]:  # 2 a second, at most 3
        clock.now += advance
        client.sock.sendall(frame_bytes(b"p", PING) * pings)
        assert [client.recv_frame() for _ in range(pings)] == [(True, PONG, b"p")] * pings
    client.sock.sendall(frame_bytes(b"p", PING))
    assert client.recv_close() == (1008, b"too many control frames")
    client.close()


def test_close_frame_is_echoed_though_the_control_budget_is_spent(budgeted):
    client = RawClient(budgeted.port)
    client.sock.sendall(frame_bytes(b"", PONG) * 3)
    client.send_close(1000, b"bye")
    assert client.recv_close() == (1000, b"bye")
    assert budgeted.next_outcome() is None
    client.close()


def test_default_control_budget_takes_a_burst_of_20_and_closes_on_the_21st(default):
    client = RawClient(default.port)
    client.sock.sendall(frame_bytes(b"", PING) * 21)
    assert [client.recv_frame() for _ in range(20)] == [(True, PONG, b"")] * 20
    assert client.recv_close() == (1008, b"too many control frames")
    client.close()


def reader_turns_given_away(server, data, reply_frames):
    """Send ``data`` in one write; count the distinct frame times another greenlet saw.

    ``last_received`` changes with every frame read: each value seen by a greenlet that
    runs whenever the hub lets it marks a turn the reader gave away between two frames."""
    client = RawClient(server.port)
    ws = server.next_socket()
    seen = set()

    def watch():
        while True:
            seen.add(ws.last_received)
            gevent.sleep(0)

    watcher = gevent.spawn(watch)
    try:
        client.sock.sendall(data)
        replies = [client.recv_frame() for _ in range(reply_frames)]
    finally:
        watcher.kill()
        client.close()
    return len(seen), replies


def test_reader_yields_to_the_hub_every_16_control_frames_of_a_buffered_flood(unlimited):
    pongs = 100 * YIELD_EVERY_FRAMES
    turns, replies = reader_turns_given_away(
        unlimited, frame_bytes(b"", PONG) * pongs + frame_bytes(b"done"), 1)
    assert replies == [(True, TEXT, b"done")]
    assert YIELD_EVERY_FRAMES == 16
    assert turns >= pongs // YIELD_EVERY_FRAMES - 1, f"{turns} turns in {pongs} frames"


def test_reader_yields_to_the_hub_after_every_message(unlimited):
    turns, replies = reader_turns_given_away(unlimited, frame_bytes(b"m") * 50, 50)
    assert replies == [(True, TEXT, b"m")] * 50
    assert turns >= 49, f"{turns} turns in 50 messages"


def test_fragmented_message_survives_the_yields_between_its_frames(unlimited):
    client = RawClient(unlimited.port)
    pings = frame_bytes(b"p", PING) * (3 * YIELD_EVERY_FRAMES)
    client.sock.sendall(fragments([b"caf", b"\xc3", b"\xa9"], between=pings))
    assert [client.recv_frame() for _ in range(6 * YIELD_EVERY_FRAMES)] == [(True, PONG, b"p")] * (
        6 * YIELD_EVERY_FRAMES)
    assert client.recv_frame() == (True, TEXT, "café".encode())
    client.close()


# close(), shutdown(), dead peers


def test_close_is_idempotent(small, raw):
    ws = small.next_socket()
    ws.close(4000, "bye")
    ws.close(4001, "again")  # raises nothing, sends nothing
    assert ws.close_code == 4000
    assert raw.recv_close() == (4000, b"bye")
    raw.send_close(4000)  # the reply ends the server's receive loop, then TCP
    assert small.next_outcome() is None
    assert raw.at_eof()


def test_shutdown_after_close_wakes_a_reader_blocked_in_receive(small, raw):
    ws = small.next_socket()
    ws.close(1001, "going away")
    ws.shutdown()
    assert small.next_outcome() is None  # the client never replied
    assert raw.recv_close() == (1001, b"going away")
    assert raw.at_eof()


def test_shutdown_fails_a_write_stuck_on_a_client_that_stopped_reading(small, raw):
    ws = small.next_socket()
    ws.handler.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    writer = gevent.spawn(ws.send, b"x" * (8 * 1024 * 1024))
    gevent.sleep(0.05)
    assert not writer.ready()  # blocked: the client reads nothing
    ws.shutdown()
    writer.join(timeout=TIMEOUT)
    assert isinstance(writer.exception, WebSocketError)
    assert ws.closed


def test_dead_peer_ends_receive_with_none_and_no_close_code(small, raw):
    ws = small.next_socket()
    key = raw.send_header(TEXT, 10)
    raw.sock.sendall(wsmends.mask(b"abc", key))
    raw.close()
    assert small.next_outcome() is None
    assert ws.closed and ws.close_code is None
    assert ws.receive() is None


def test_sending_on_a_closed_socket_raises_websocket_error(small, raw):
    ws = small.next_socket()
    ws.close()
    with pytest.raises(WebSocketError):
        ws.send("late")
    with pytest.raises(WebSocketError):
        ws.send_raw(encode_frame("late"))


# Writing: prebuilt frames and the write lock


@pytest.mark.parametrize("length", [0, 125, 126, 0xFFFF, 0x10000])
def test_encode_frame_matches_the_original_header_encoder(length):
    payload = os.urandom(length)
    original = gws_websocket.Header.encode_header(True, BINARY, b"", length, 0)
    assert encode_frame(payload, BINARY) == bytes(original) + payload


def test_one_prebuilt_frame_reaches_every_socket(small):
    clients = [RawClient(small.port) for _ in range(3)]
    frame = encode_frame("to everyone")
    for _ in clients:
        small.next_socket().send_raw(frame)
    for client in clients:
        assert client.recv_frame() == (True, TEXT, b"to everyone")
        client.close()


def test_frames_from_concurrent_greenlets_never_interleave(small, raw):
    ws = small.next_socket()
    # A small send buffer makes each write block part way, handing the hub to other writers.
    ws.handler.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    size = 256 * 1024

    def write(fill):
        for _ in range(3):
            ws.send(bytes([fill]) * size)

    writers = [gevent.spawn(write, fill) for fill in (1, 2, 3)]
    gevent.sleep(0.05)  # let every writer start and block before the client reads
    for _ in range(9):
        fin, opcode, payload = raw.recv_frame()
        assert (fin, opcode, len(payload)) == (True, BINARY, size)
        assert payload == payload[:1] * size
    gevent.joinall(writers, timeout=TIMEOUT, raise_error=True)


# Fast paths against the originals


def _original_mask(payload, key):
    header = gws_websocket.Header()
    header.mask, header.length = key, len(payload)
    return ORIGINAL_MASK_PAYLOAD(header, payload)


@given(payload=st.binary(max_size=5000), key=st.binary(min_size=4, max_size=4))
def test_header_mask_payload_equals_the_original(payload, key):
    header = gws_websocket.Header()  # the patched class
    header.mask, header.length = key, len(payload)
    assert header.unmask_payload(payload) == _original_mask(payload, key)


def test_mask_of_64k_equals_the_original():
    payload, key = os.urandom(65536), os.urandom(4)
    assert wsmends.mask(payload, key) == _original_mask(payload, key)


def _decode_accepts(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _validator_accepts(data):
    valid, ends_on_code_point, _, _ = Utf8Validator().validate(data)
    return valid and ends_on_code_point


# Bytes that start, continue or break UTF-8 sequences, to reach the edge cases often.
_UTF8_EDGE_BYTES = st.sampled_from(
    [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
     0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xF8, 0xFE, 0xFF])


@given(data=st.binary(max_size=64) | st.lists(_UTF8_EDGE_BYTES, max_size=12).map(bytes))
def test_utf8_decode_agrees_with_the_original_validator_on_random_bytes(data):
    assert _decode_accepts(data) == _validator_accepts(data)


@given(text=st.text())
def test_utf8_decode_agrees_with_the_original_validator_on_valid_text(text):
    data = text.encode("utf-8")
    assert _decode_accepts(data) and _validator_accepts(data)


# Logging


def test_create_logger_keeps_the_handlers_and_class_of_the_logger():
    log = logging.getLogger("tests.wsmends.create_logger")
    handler = logging.NullHandler()
    log.addHandler(handler)
    try:
        cls = type(log)
        assert wsmends.create_logger(log.name, debug=True, format="%(message)s") is log
        assert log.handlers == [handler] and type(log) is cls
    finally:
        log.removeHandler(handler)


def test_send_now_keeps_the_end_of_a_frame_the_kernel_did_not_take_for_the_next_write(default):
    client = RawClient(default.port)
    try:
        ws = default.next_socket()
        ws.handler.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        payload = os.urandom(1 << 20)
        assert ws.send_now(wsmends.encode_frame(payload, BINARY)) is True
        assert ws.pending  # 1 MiB does not fit an 8 KiB buffer and nobody read yet
        assert ws.send_now(b"never") is False  # nothing may come between the halves
        closer = gevent.spawn(ws.close, 1000, "bye")  # waits for room, the end goes first
        assert client.recv_frame() == (True, BINARY, payload)
        assert client.recv_close() == (1000, b"bye")
        closer.join(timeout=TIMEOUT)
        assert not ws.pending and ws.close_code == 1000
    finally:
        client.close()
