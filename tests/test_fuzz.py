"""Property-based fuzzing of /ws/ (PROTOCOL.md, Connection and Envelope) against a real gunicorn.

Random JSON and random WebSocket frames, built by hand, go out on a raw socket. Afterwards the
connection answers a ``ping``, or the server closed it with a close frame whose code what was
sent justifies (1002, 1007, 1009, or the echo of the client's own close), then ended TCP; and
the worker still serves another client. One socket is reused while the server keeps it open.
"""
import codecs
import itertools
import json
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import websocket
from hypothesis import HealthCheck, Phase, event, given, settings, strategies as st

from chat.monitor import REPORT_PREFIX
from tests.live import connect, receive, send

MAX_BYTES = 4096  # CHAT_MAX_MESSAGE_BYTES of the fuzzed server: small, so 1009 is reachable
READ_TIMEOUT = 5.0  # no single read waits longer
EXAMPLE_TIMEOUT = 15.0  # nor does one example's wait for its pong or close
FRAME_TYPES = ("join", "leave", "send", "typing", "history", "ping", "whoami")
ERROR_CODES = {"bad_request", "unknown_type", "unknown_room", "not_joined", "forbidden",
               "rate_limited", "server_error"}
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODES = {CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG}  # RFC 6455 section 5.2; others reserved
OPEN = "open"  # the outcome of an example whose probe got its pong
# No shrinking: a server that crashes on a frame can stall its hub for seconds (the DEBUG
# 500 page), and hundreds of replays would take minutes; the first failure is reported as found.
FUZZ_SETTINGS = settings(
    max_examples=200, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large])
PROBES = itertools.count(1)


# --- frames, written by hand ---------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A client frame as it goes on the wire, valid or not."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0  # the three RSV bits
    masked: bool = True
    key: bytes = b"\x37\xfa\x21\x3d"
    length_bytes: int | None = None  # extended length bytes (0, 2, 8); None: the minimal form

    @property
    def extended(self):
        """The extended length bytes used: as asked, widened where the length does not fit."""
        n = len(self.payload)
        needed = 0 if n <= 125 else 2 if n <= 0xFFFF else 8
        return needed if self.length_bytes is None else max(self.length_bytes, needed)

    @property
    def minimal(self):
        n = len(self.payload)
        return self.extended == (0 if n <= 125 else 2 if n <= 0xFFFF else 8)

    def encode(self):
        n = len(self.payload)
        first = (0x80 if self.fin else 0) | self.rsv << 4 | self.opcode
        mask_bit = 0x80 if self.masked else 0
        if self.extended == 0:
            head = struct.pack("!BB", first, mask_bit | n)
        elif self.extended == 2:
            head = struct.pack("!BBH", first, mask_bit | 126, n)
        else:
            head = struct.pack("!BBQ", first, mask_bit | 127, n)
        if not self.masked:
            return head + self.payload
        masked = bytes(byte ^ self.key[i % 4] for i, byte in enumerate(self.payload))
        return head + self.key + masked


def probe(ref):
    """The ping sent after each example (to ``predict``, any probe's frame is the same)."""
    return Frame(TEXT, json.dumps({"type": "ping", "ref": ref}).encode())


# --- what the server may do with a run of frames --------------------------------------------

@dataclass
class Prediction:
    """What an RFC 6455 server held to PROTOCOL.md may do with a run of frames."""

    codes: set  # close codes that what was sent justifies
    must_close: bool  # False: the server may also keep the socket open (and then answers)
    pings: list = field(default_factory=list)  # payloads of the pings read before the end
    binaries: int = 0  # binary messages completed, each owed a bad_request


def predict(frames):
    codes, pings, binaries = set(), [], 0
    message, size, decoder, invalid = None, 0, None, False  # the message being reassembled
    for frame in frames:
        n, control = len(frame.payload), frame.opcode >= 0x8
        if not frame.minimal:
            codes.add(1002)  # the sender MUST use the minimal length (5.2): may be refused
        violations = set()
        if frame.rsv or frame.opcode not in OPCODES or not frame.masked:
            violations.add(1002)  # no extension negotiated; reserved opcode; unmasked (5.1)
        if control:
            if not frame.fin or n > 125:
                violations.add(1002)  # control frames are short and never fragmented (5.5)
        else:
            if n > MAX_BYTES - size:
                violations.add(1009)  # the limit counts the whole message (PROTOCOL.md)
            if (frame.opcode == CONTINUATION) == (message is None):
                violations.add(1002)  # continuation outside a message, or a new one inside (5.4)
        if violations:
            return Prediction(codes | violations, True, pings, binaries)
        if frame.opcode == CLOSE:
            return Prediction(codes | close_replies(frame.payload), True, pings, binaries)
        if frame.opcode == PING:
            pings.append(frame.payload)
            continue
        if frame.opcode == PONG:
            continue
        if frame.opcode != CONTINUATION:
            message, size = frame.opcode, 0
            decoder, invalid = codecs.getincrementaldecoder("utf-8")(), False
        size += n
        if message == TEXT and not invalid:
            try:
                decoder.decode(frame.payload, final=frame.fin)
            except UnicodeDecodeError:
                invalid = True
                codes.add(1007)  # a server may fail fast, before the last fragment (8.1)
        if frame.fin:
            if invalid:
                return Prediction(codes | {1007}, True, pings, binaries)
            binaries += message == BINARY
            message, size = None, 0
    return Prediction(codes, False, pings, binaries)


def close_replies(payload):
    """The codes a server may answer a client's close frame with (RFC 6455 5.5.1, 7.4)."""
    if not payload:
        return {1000, None}  # no status: echo without one, or with 1000
    if len(payload) == 1:
        return {1002}
    code, bad = struct.unpack("!H", payload[:2])[0], set()
    if not (1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999):
        bad.add(1002)
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        bad.add(1007)
    return bad or {code}


# --- the sockets ---------------------------------------------------------------------------

@dataclass
class Outcome:
    events: list  # the JSON events received in this example, in order
    pongs: list  # payloads of the pong frames received
    close: object  # OPEN, or the code of the server's close frame (None: it had none)


class Peer:
    """A raw authenticated socket to the fuzzed server, reopened when the server closed it."""

    def __init__(self, server, make_users):
        self.server, self.make_users = server, make_users
        self.sock, self.buffer, self.username = None, b"", None

    def ensure_open(self):
        if self.sock is not None:
            return
        [(self.username, key)] = self.make_users(1, prefix="fuzz")
        self.sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=READ_TIMEOUT)
        self.sock.sendall((
            "GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nCookie: sessionid=%s\r\n\r\n" % (self.server.port, key)
        ).encode())
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(deadline), "connection closed during the handshake"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def drop(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the server closed first: what it sent before says why

    def _fill(self, deadline):
        wait = min(READ_TIMEOUT, deadline - time.monotonic())
        assert wait > 0, f"no pong and no close within {EXAMPLE_TIMEOUT} s (a hang)"
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"the server sent nothing for {wait:.1f} s (a hang)") from None
        except ConnectionResetError:
            raise AssertionError("the server reset the connection (no orderly close)") from None
        self.buffer += chunk
        return chunk

    def _take(self, n, deadline):
        while len(self.buffer) < n:
            assert self._fill(deadline), "the server ended the connection inside a frame"
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self, deadline):
        """Read one server frame and check its form; None when the server ended the stream."""
        if not self.buffer and not self._fill(deadline):
            return None
        first, second = self._take(2, deadline)
        assert not second & 0x80, "a server frame is masked (RFC 6455 5.1)"
        assert not first & 0x70, "a server frame has RSV bits set"
        opcode, fin, length = first & 0x0F, bool(first & 0x80), second & 0x7F
        assert opcode in OPCODES and opcode != BINARY, f"server frame with opcode {opcode}"
        if length == 126:
            length = struct.unpack("!H", self._take(2, deadline))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8, deadline))[0]
        assert opcode < 0x8 or fin and length <= 125, "a malformed server control frame"
        return opcode, fin, self._take(length, deadline)


class Bystander:
    """Another user's socket on the same worker: it must get its pong after every example."""

    def __init__(self, server, make_users):
        [(_, key)] = make_users(1, prefix="bystander")
        self.ws = connect(server, key, timeout=READ_TIMEOUT)
        self.count = itertools.count(1)

    def check(self, timeout=READ_TIMEOUT):
        ref = f"bystander-{next(self.count)}"
        send(self.ws, type="ping", ref=ref)
        deadline = time.monotonic() + timeout
        while True:  # skipping the late pong of a check that failed before
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the worker served no other client for {timeout} s"
            try:
                reply = receive(self.ws, timeout=remaining)
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"the worker served no other client for {timeout} s") from None
            if reply == {"type": "pong", "ref": ref}:
                return


def exchange(peer, frames, ref):
    """Send ``frames`` and a probe ``ping``; read until its pong, or the close and end of TCP."""
    peer.send(b"".join(frame.encode() for frame in frames) + probe(ref).encode())
    deadline = time.monotonic() + EXAMPLE_TIMEOUT
    events, pongs, fragments = [], [], []
    while True:
        received = peer.read_frame(deadline)
        assert received is not None, f"the server ended TCP without a close frame, after {events}"
        opcode, fin, payload = received
        if opcode == CLOSE:
            assert len(payload) != 1, "a 1-byte close payload"
            payload[2:].decode("utf-8")  # the reason is UTF-8 (5.5.1)
            code = struct.unpack("!H", payload[:2])[0] if payload else None
            assert peer.read_frame(deadline) is None, "the server sent more after its close frame"
            peer.drop()
            return Outcome(events, pongs, code)
        if opcode == PING:
            peer.send(Frame(PONG, payload).encode())
            continue
        if opcode == PONG:
            pongs.append(payload)
            continue
        fragments.append(payload)
        if not fin:
            continue
        event = check_event(b"".join(fragments))
        fragments = []
        events.append(event)
        if event.get("type") == "pong" and event.get("ref") == ref:
            assert event == {"type": "pong", "ref": ref}
            return Outcome(events, pongs, OPEN)


def check_event(data):
    """Every server message is a UTF-8 JSON object with a type; errors have a code and detail."""
    event = json.loads(data.decode("utf-8"))
    assert isinstance(event, dict) and isinstance(event.get("type"), str), event
    if event["type"] == "error":
        assert event.get("code") in ERROR_CODES, event
        assert isinstance(event.get("detail"), str), event
    return event


def run_example(peer, bystander, frames):
    """One example on ``peer`` (reopened if needed); then the bystander must still be served."""
    bystander.check(timeout=30)  # not held up by an example that failed before this one
    peer.ensure_open()
    try:
        outcome = exchange(peer, frames, f"probe-{next(PROBES)}")
    except BaseException:
        peer.drop()  # its state is unknown now: the next example starts afresh
        raise
    bystander.check()
    event(f"outcome: {outcome.close}")
    for received in outcome.events:
        kind = received["type"]
        event(f"error: {received['code']}" if kind == "error" else f"event: {kind}")
    return outcome


def check_outcome(prediction, outcome):
    """The outcome is one that the frames justify, and pings were answered (5.5.2, 5.5.3)."""
    assert is_subsequence(outcome.pongs, prediction.pings), "a pong that answers no ping"
    if outcome.close is OPEN:
        assert not prediction.must_close, \
            f"the socket should have been closed with one of {prediction.codes}"
        if prediction.pings:
            assert outcome.pongs[-1:] == prediction.pings[-1:], "the last ping got no pong"
        bad_requests = [e for e in outcome.events
                        if e["type"] == "error" and e["code"] == "bad_request"]
        assert len(bad_requests) >= prediction.binaries, "a binary message got no bad_request"
    else:
        assert outcome.close in prediction.codes, \
            f"closed with {outcome.close}; what was sent justifies {prediction.codes or 'no close'}"


def is_subsequence(items, sequence):
    rest = iter(sequence)
    return all(any(item == candidate for candidate in rest) for item in items)


# --- strategies -----------------------------------------------------------------------------

#: Characters that JSON, UTF-8 or PostgreSQL treat specially, drawn as often as all others.
ODD_CHARACTERS = ["\x00", "\ud800", "\udfff", "\ufffe", "\U0001f600", '"', "\\", "\u2028", "\x7f"]


def texts(**kwargs):
    """Any text, lone surrogates included (JSON escapes them as \\ud800)."""
    # A list, not st.text(alphabet): that would merge the two and draw odd ones once in a million.
    characters = st.one_of(st.characters(exclude_categories=()), st.sampled_from(ODD_CHARACTERS))
    return st.lists(characters, **kwargs).map("".join)


def mostly(usual, unusual, share=2):
    """``usual`` ``share`` times out of ``share + 1``, otherwise ``unusual``."""
    return st.integers(0, share).flatmap(lambda i: unusual if i == share else usual)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts(max_size=20)


def containers(inner):
    return st.lists(inner, max_size=4) | st.dictionaries(texts(max_size=8), inner, max_size=4)


json_values = st.recursive(scalars, containers, max_leaves=12)
numbers = mostly(st.integers(-3, 120), st.one_of(
    st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -2**63 - 1, 10**40]),
    st.integers(), st.booleans(), st.floats(), st.none(), texts(max_size=5)), share=1)
bodies = st.one_of(
    texts(min_size=1, max_size=50),
    st.text(" \t\n\r\x0b\x0c\u00a0\u2003\u3000", max_size=6),  # only white space, or empty
    st.builds(str.__mul__, st.sampled_from(["x", "é", " "]), st.integers(3990, 4010)),  # long
    json_values)
refs = mostly(texts(min_size=1, max_size=64), st.one_of(
    texts(max_size=80), st.integers(64, 66).map("r".__mul__), st.just(""), st.integers(),
    json_values))
types = mostly(st.sampled_from(FRAME_TYPES), st.one_of(texts(max_size=12), json_values))


def json_messages(rooms):
    """Random JSON: frames that are valid but for at most one field, random frames, anything."""
    slugs = mostly(st.sampled_from(rooms), st.one_of(
        st.from_regex(r"[-a-zA-Z0-9_]{1,50}", fullmatch=True), texts(max_size=60), json_values))
    random_frames = st.builds(
        with_extra_fields,
        st.dictionaries(texts(max_size=8), json_values, max_size=2),
        st.fixed_dictionaries({"type": types}, optional={
            "room": slugs, "since": numbers, "before": numbers, "limit": numbers, "body": bodies,
            "ref": refs}))
    valid_frames = st.fixed_dictionaries({
        "type": st.sampled_from(FRAME_TYPES), "room": st.sampled_from(rooms),
        "ref": texts(min_size=1, max_size=64), "body": texts(min_size=1, max_size=50),
        "since": st.integers(0, 5), "before": st.integers(0, 10), "limit": st.integers(1, 100)})
    spoilt = {"type": types, "room": slugs, "ref": refs, "body": bodies, "since": numbers,
              "before": numbers, "limit": numbers}

    @st.composite
    def nearly_valid_frames(draw):
        frame = draw(valid_frames)
        name = draw(st.sampled_from([None, *spoilt]))
        if name is not None and draw(st.booleans()):
            del frame[name]
        elif name is not None:
            frame[name] = draw(spoilt[name])
        return frame

    return st.integers(0, 3).flatmap(
        lambda i: [nearly_valid_frames(), nearly_valid_frames(), random_frames, json_values][i])


def with_extra_fields(extra, fields):
    return {**extra, **fields}


def encode_json(value, ascii_only):
    try:
        return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only its \u escape is valid UTF-8
        return json.dumps(value).encode("utf-8")


def payloads(rooms):
    utf8 = texts(max_size=50).map(lambda s: s.encode("utf-8", "surrogatepass"))  # may be invalid
    return st.one_of(
        st.binary(max_size=130),
        st.builds(encode_json, json_messages(rooms), st.booleans()),
        utf8,
        st.tuples(utf8, st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"]), utf8)
        .map(b"".join),  # certainly invalid UTF-8, or (cut at the end) a split code point
        st.integers(MAX_BYTES - 8, MAX_BYTES + 8).map(lambda n: b'"' + b"x" * (n - 2) + b'"'))


close_payloads = st.builds(
    lambda code, reason: struct.pack("!H", code) + reason,
    st.one_of(st.sampled_from([1000, 1001, 1002, 1004, 1005, 1006, 1007, 1012, 1015, 2999, 3000,
                               4999, 5000]), st.integers(0, 0xFFFF)),
    st.one_of(texts(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
              st.binary(max_size=20)))
keys = st.binary(min_size=4, max_size=4)


@st.composite
def well_formed(draw, rooms):
    """A masked, unfragmented text, binary, ping or pong frame (its payload may be anything)."""
    opcode = draw(st.sampled_from([TEXT, TEXT, BINARY, PING, PONG]))
    payload = draw(payloads(rooms) if opcode < 0x8 else st.binary(max_size=125))
    return [Frame(opcode, payload, key=draw(keys))]


@st.composite
def fragmented(draw, rooms):
    """A text or binary message in fragments (cut anywhere), maybe with pings between them."""
    opcode, payload = draw(st.sampled_from([TEXT, BINARY])), draw(payloads(rooms))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=3)))
    parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    frames = []
    for i, part in enumerate(parts):
        frames.append(Frame(CONTINUATION if i else opcode, part, fin=i == len(parts) - 1,
                            key=draw(keys)))
        if draw(st.integers(0, 3)) == 0:
            frames.append(Frame(PING, draw(st.binary(max_size=20)), key=draw(keys)))
    return frames


@st.composite
def any_frame(draw, rooms):
    """Any opcode, FIN, RSV bits, mask and length encoding."""
    opcode = draw(st.one_of(st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE]),
                            st.integers(0, 15)))
    payload = draw(close_payloads if opcode == CLOSE and draw(st.booleans()) else payloads(rooms))
    return [Frame(
        opcode, payload,
        fin=draw(st.one_of(st.just(True), st.booleans())),
        rsv=draw(mostly(st.just(0), st.integers(1, 7))),
        masked=draw(mostly(st.just(True), st.just(False))),
        key=draw(keys),
        length_bytes=draw(mostly(st.none(), st.sampled_from([0, 2, 8]))))]


def frame_runs(rooms):
    """One to four chunks of frames, mostly well formed, flattened."""
    chunk = mostly(st.one_of(well_formed(rooms), fragmented(rooms)), any_frame(rooms))
    return st.lists(chunk, min_size=1, max_size=4).map(lambda chunks: sum(chunks, []))


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_server(start_server):
    """A gunicorn of its own: the shared one's rate limits and presence stay undisturbed."""
    # No test hooks (_sleep, _spin): every type outside PROTOCOL.md must get unknown_type.
    # Hub stalls are reported from a second on: a loaded machine makes 0.1 s ones by itself.
    return start_server(CHAT_RATE_LIMIT=100000, CHAT_RATE_BURST=100000,
                        CHAT_MAX_MESSAGE_BYTES=MAX_BYTES, CHAT_TEST_HOOKS=0,
                        CHAT_MAX_BLOCKING_TIME=1.0,
                        # One socket sends pings and pongs far faster than a client would.
                        CHAT_CONTROL_FRAMES_PER_SECOND=100000)


@pytest.fixture(scope="module")
def rooms(make_users, make_room):
    [(author, _)] = make_users(1, prefix="fuzzauthor")
    return ["lobby", make_room(messages=3, author=author), make_room(private=True)]


@pytest.fixture(scope="module")
def peer(fuzz_server, make_users):
    peer = Peer(fuzz_server, make_users)
    yield peer
    peer.drop()


@pytest.fixture(scope="module")
def bystander(fuzz_server, make_users):
    bystander = Bystander(fuzz_server, make_users)
    yield bystander
    bystander.ws.close()


# --- the properties -------------------------------------------------------------------------

@FUZZ_SETTINGS
@given(data=st.data())
def test_random_json_gets_well_formed_replies_and_the_socket_still_answers_ping(
        peer, bystander, rooms, data):
    value = data.draw(json_messages(rooms), label="message")
    payload = encode_json(value, data.draw(st.booleans(), label="ensure_ascii"))
    frames = [Frame(TEXT, payload)]
    room = value.get("room") if isinstance(value, dict) else None
    if room in rooms and data.draw(mostly(st.just(True), st.just(False)), label="joined first"):
        # so that send, typing, history and leave can get past not_joined
        join = {"type": "join", "room": room, "ref": "setup"}
        frames.insert(0, Frame(TEXT, json.dumps(join).encode()))
    outcome = run_example(peer, bystander, frames)
    check_outcome(predict(frames + [probe("p")]), outcome)
    if len(payload) > MAX_BYTES:
        assert outcome.close == 1009
        return
    assert outcome.close is OPEN, "JSON never closes a connection"
    check_replies(value, [e for e in outcome.events if e.get("ref") != "setup"], peer.username)


def check_replies(value, events, username):
    """The replies PROTOCOL.md (Envelope, error codes) requires of one JSON message."""
    errors = [e for e in events if e["type"] == "error"]
    if not isinstance(value, dict):
        assert any(e["code"] == "bad_request" and "ref" not in e for e in errors), \
            f"a frame that is not an object got {events}"
        return
    if nesting(value) > 16:
        return  # too deep: the server may refuse it (CHAT_MAX_JSON_DEPTH) before reading the ref
    if has_lone_surrogate(value):
        return  # not Unicode text: the server may refuse the frame, or echo the \ud800 escaped
    if "ref" in value and not (isinstance(value["ref"], str) and 1 <= len(value["ref"]) <= 64
                               and "\x00" not in value["ref"]):  # PostgreSQL stores no NUL
        assert any(e["code"] == "bad_request" and "ref" not in e for e in errors), \
            f"an invalid ref got {events}"
        return
    ref = value.get("ref")
    for error in errors:
        assert error.get("ref") == ref, f"an error that does not echo the ref {ref!r}: {error}"
    kind = value.get("type")
    echo = {} if ref is None else {"ref": ref}
    if not isinstance(kind, str) or not kind:
        assert any(e["code"] == "bad_request" for e in errors), f"no type, and got {events}"
    elif kind not in FRAME_TYPES:
        assert any(e["code"] == "unknown_type" for e in errors), f"type {kind!r} got {events}"
    elif kind == "ping":
        assert {"type": "pong", **echo} in events, events
    elif kind == "whoami":
        assert {"type": "whoami", "user": username, **echo} in events, events


def has_lone_surrogate(value):
    if isinstance(value, dict):
        return any(map(has_lone_surrogate, [*value, *value.values()]))
    if isinstance(value, list):
        return any(map(has_lone_surrogate, value))
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def nesting(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


@FUZZ_SETTINGS
@given(data=st.data())
def test_random_frames_leave_the_socket_answering_ping_or_closed_with_a_justified_code(
        peer, bystander, rooms, data):
    frames = data.draw(frame_runs(rooms), label="frames")
    outcome = run_example(peer, bystander, frames)
    check_outcome(predict(frames + [probe("p")]), outcome)


def test_after_the_fuzzing_a_fresh_client_still_gets_a_pong(fuzz_server, make_users):
    [(_, key)] = make_users(1, prefix="after")
    ws = connect(fuzz_server, key, timeout=READ_TIMEOUT)
    send(ws, type="ping", ref="after")
    assert receive(ws, timeout=READ_TIMEOUT) == {"type": "pong", "ref": "after"}
    ws.close()


def test_the_fuzzed_server_logged_no_traceback_and_no_stall_of_its_hub(fuzz_server):
    log = fuzz_server.log()
    assert "Traceback" not in log, traceback_report(log)
    assert REPORT_PREFIX not in log, log[log.index(REPORT_PREFIX) - 100:][:3000]


def traceback_report(log):
    """Each exception the server logged a traceback of, counted; then the first one in full."""
    rows, counts, first = log.splitlines(), Counter(), None
    for i, row in enumerate(rows):
        if row.startswith("Traceback"):
            end = next((j for j in range(i + 1, len(rows)) if rows[j][:1] not in (" ", "")), i)
            counts[rows[end]] += 1
            first = first or [r for r in rows[max(0, i - 1):end + 1] if r.strip(" ^~")]
    summary = "\n".join(f"{count} x {line}" for line, count in counts.most_common())
    return f"tracebacks in the server log:\n{summary}\nthe first:\n" + "\n".join(first[:80])
