"""One socket of the chaos soak: it reconnects, resumes with ``since``, resends, and counts.

A ``ChaosClient`` is one signed-in user in one room on one gunicorn instance. After every
close or error it reconnects with exponential backoff and jitter, joins again with ``since``
= the last seq it saw, and resends every unacknowledged ``send`` with the same ``ref``
(PROTOCOL.md, Guarantees). Its ``Stream`` (chaos_check.py) records what it saw of the room
from its first ``joined`` on. It never fills a hole from ``history`` (a hole is a loss); only a ``joined``
cut short (``more: true``) is paged back, as the protocol says.

A resend of a ref already stored is answered with the original message, to this socket only
and even if it has that seq already: that reply is not part of the room's stream. Each resend
on a connection may cause one such reply; a copy of the resent ref that the stream already
holds, or that does not come next in seq order, is taken as that reply.
"""
import json
import logging
import random
import time
from collections import Counter

import gevent
from gevent.lock import Semaphore

from bench.chaos_check import Stream
from chatload import wire

logger = logging.getLogger("chaos")

BACKOFF = (0.5, 5.0)  # seconds: the first wait before reconnecting, the longest
CONNECT_TIMEOUT = 10.0
JOIN_TIMEOUT = 20.0
SILENCE = 90.0  # the server pings every 25 s: this long without a byte is a dead connection
RETRY_AFTER = 1.0  # seconds (1 to 2, with jitter) before resending a send that got an error
PAGE = 100


class JoinFailed(Exception):
    pass


def _reason(error):
    """Name why a connection ended: its close code, HTTP status, the join's error, or the OS error."""
    if isinstance(error, wire.Closed):
        return str(error.code)
    if isinstance(error, wire.HandshakeError):
        return f"http {error.status}"
    if isinstance(error, JoinFailed):
        return f"join {error}"
    return type(error).__name__


class ChaosClient:
    """One user's socket in ``room`` on ``(host, port)``; ``run`` keeps it connected until ``stop``."""

    def __init__(self, name, key, room, host, port, run_id, rng=None):
        self.name, self.cookie, self.room = name, f"sessionid={key}", room
        self.host, self.port, self.run_id = host, port, run_id
        self.rng = rng or random.Random()
        self.stream = Stream()
        self.sock, self.buffer, self.lock = None, bytearray(), Semaphore()
        self.backlog = []  # events read with the ``joined``, after it
        self.live = self.stopping = False
        self.connection = 0  # serial of the current connection
        self.pending = {}  # ref -> body: sent (or to send), not acknowledged
        self.sent = set()  # refs sent at least once
        self.replies = Counter()  # ref -> resends on this connection not yet answered apart
        self.acked = {}  # ref -> seq
        self.issued = self.resends = self.reconnects = self.resumes = self.pages = 0
        self.closes, self.errors, self.anomalies = Counter(), Counter(), Counter()
        self.workers = []  # worker pid of each connection
        self.joins = []  # per connection: when, since, the joined's seq, its messages' first and last seq
        self.greenlet = None
        self.page_floor = None

    # --- the connection ---

    def start(self):
        self.greenlet = gevent.spawn(self.run)
        return self

    def run(self):
        """Connect, join, read; after every loss wait with backoff and do it again."""
        failures = 0
        while not self.stopping:
            try:
                self._connect()
                failures = 0
                self._read_forever()
            except (wire.Closed, wire.HandshakeError, JoinFailed, OSError) as error:
                if not self.stopping:
                    self.closes[_reason(error)] += 1
            finally:
                self._drop()
            if self.stopping:
                return
            self.reconnects += 1
            gevent.sleep(self.rng.uniform(0.5, 1.0) * min(BACKOFF[1], BACKOFF[0] * 2 ** failures))
            failures += 1

    def _connect(self):
        self.sock, rest = wire.open_socket(self.host, self.port, "/ws/", self.cookie, CONNECT_TIMEOUT)
        self.buffer = bytearray(rest)
        self.sock.settimeout(SILENCE)
        resume = self.stream.start is not None
        join = {"type": "join", "room": self.room, "ref": "join"}
        if resume:
            join["since"] = self.stream.last
        self._send_frame(join)
        with gevent.Timeout(JOIN_TIMEOUT, JoinFailed("timeout")):
            joined = self._read_until_joined()
        self._on_joined(joined, resume)
        for event in self.backlog:  # before resending: the acknowledgements among them came first
            self._on_event(event)
        self.backlog = []
        self.connection += 1
        self.live = True
        self._send_frame({"type": "_worker", "ref": "worker"})
        for ref in list(self.pending):
            self._send(ref)

    def _read_until_joined(self):
        """Return the ``joined``; what came after it in the same read waits in ``backlog``."""
        while True:
            events = self._events()
            for i, event in enumerate(events):
                if event.get("type") == "joined":
                    self.backlog = events[i + 1:]
                    return event
                if event.get("type") == "error" and event.get("ref") == "join":
                    raise JoinFailed(event.get("code"))
                self._on_event(event)

    def _read_forever(self):
        while True:
            for event in self._events():
                self._on_event(event)

    def _events(self):
        """Read once; return the JSON events received (answering pings, raising on close)."""
        data = self.sock.recv(wire.RECV_SIZE)
        if not data:
            raise wire.Closed(1006)
        self.buffer += data
        events = []
        for first, payload in wire.parse(self.buffer):
            opcode = first & 0x0F
            if opcode == wire.OP_TEXT:
                try:
                    events.append(json.loads(payload))
                except ValueError:
                    self.anomalies["frame not JSON"] += 1
            elif opcode == wire.OP_PING:
                self._send_raw(payload, wire.OP_PONG)
            elif opcode == wire.OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                try:
                    self._send_raw(payload[:2], wire.OP_CLOSE)
                except OSError:
                    pass
                raise wire.Closed(code)
        return events

    def _drop(self):
        self.live = False
        self.replies.clear()  # replies come on the connection that resent
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def stop(self):
        """Close with 1000 and stop reconnecting."""
        self.stopping, self.live = True, False
        if self.sock is not None:
            try:
                self._send_raw((1000).to_bytes(2, "big"), wire.OP_CLOSE)
            except OSError:
                pass
        if self.greenlet is not None:
            self.greenlet.kill(block=True, timeout=5)
        self._drop()

    # --- sending ---

    def send_new(self):
        """Send a new message (later, if not connected now); it stays pending until acknowledged."""
        self.issued += 1
        ref = f"{self.run_id}-{self.name}-{self.issued}"
        self.pending[ref] = f"chaos {self.name} {self.issued}"
        if self.live:
            self._send(ref)

    def _send(self, ref):
        if ref in self.sent:
            self.resends += 1
            self.replies[ref] += 1
        self.sent.add(ref)
        try:
            self._send_frame({"type": "send", "room": self.room, "body": self.pending[ref], "ref": ref})
        except OSError:
            pass  # the reader sees the close, and the next connection resends

    def _retry(self, ref, connection):
        if ref in self.pending and self.live and self.connection == connection:
            self._send(ref)

    def _send_frame(self, obj):
        self._send_raw(json.dumps(obj, separators=(",", ":")).encode())

    def _send_raw(self, payload, opcode=wire.OP_TEXT):
        sock = self.sock
        if sock is None:
            raise OSError("not connected")
        with self.lock:  # frames from several greenlets must not interleave
            sock.sendall(wire.frame(opcode, payload))

    # --- what arrives ---

    def _on_joined(self, joined, resume):
        seqs = [m["seq"] for m in joined["messages"]]
        self.joins.append((round(time.time(), 3), self.stream.last if resume else None, joined["seq"],
                           seqs[:1] + seqs[-1:]))
        if not resume:
            self.stream.begin(joined["seq"])
            return
        self.resumes += 1
        if joined["seq"] < self.stream.last:
            self.anomalies["joined seq below the last seen"] += 1
        since = self.stream.last
        for message in joined["messages"]:
            self._on_message(message)
        if joined.get("more"):
            self.page_floor = since
            first = joined["messages"][0]["seq"] if joined["messages"] else joined["seq"] + 1
            self._send_frame({"type": "history", "room": self.room, "before": first, "limit": PAGE,
                              "ref": "page"})

    def _on_event(self, event):
        kind = event.get("type")
        if kind == "message":
            self._on_message(event)
        elif kind == "error":
            self._on_error(event)
        elif kind == "_worker":
            self.workers.append(event["pid"])
        elif kind == "history" and event.get("ref") == "page":
            self._on_page(event)

    def _on_message(self, message):
        if self.stream.start is None:
            self.anomalies["message before joined"] += 1
            return
        seq, ref = message["seq"], message.get("ref")
        mine = message.get("user") == self.name
        if mine and ref in self.pending:
            self.pending.pop(ref)
            self.acked[ref] = seq
        elif mine and ref in self.acked and self.acked[ref] != seq:
            self.anomalies["one ref acknowledged with two seqs"] += 1
        if mine and self.replies[ref] > 0 and (self.stream.seen(seq) or seq != self.stream.last + 1):
            self.replies[ref] -= 1  # the answer to a resend, not the room's stream
            return
        self.stream.take(seq)

    def _on_page(self, page):
        """A page of what a ``joined`` cut short (``more``): add it, and ask for the next."""
        self.pages += 1
        seqs = [m["seq"] for m in page["messages"] if m["seq"] > self.page_floor]
        for message in page["messages"]:
            if message["seq"] > self.page_floor:
                self._on_message_paged(message)
        if page.get("more") and seqs and min(seqs) > self.page_floor + 1:
            self._send_frame({"type": "history", "room": self.room, "before": min(seqs), "limit": PAGE,
                              "ref": "page"})

    def _on_message_paged(self, message):
        if message.get("user") == self.name and message.get("ref") in self.pending:
            self.acked[message["ref"]] = message["seq"]
            self.pending.pop(message["ref"])
        self.stream.take(message["seq"], in_order=False)

    def _on_error(self, error):
        self.errors[error.get("code", "?")] += 1
        ref = error.get("ref")
        if ref in self.pending:
            gevent.spawn_later(RETRY_AFTER * self.rng.uniform(1, 2), self._retry, ref, self.connection)

    # --- the end ---

    def caught_up(self, upto):
        """Tell whether this socket is connected, has nothing pending and saw up to ``upto``."""
        return self.live and not self.pending and self.stream.last is not None and self.stream.last >= upto

    def summary(self, upto):
        """What this socket saw, against the room's ``upto`` (its last seq in the database)."""
        missing = self.stream.missing(upto) if self.stream.start is not None else None
        return {"name": self.name, "room": self.room, "port": self.port, "start": self.stream.start,
                "last": self.stream.last, "upto": upto, "received": self.stream.received(),
                "missing": missing, "duplicates": self.stream.duplicates, "reordered": self.stream.reordered,
                "resumes": self.resumes, "reconnects": self.reconnects, "issued": self.issued,
                "acked": len(self.acked), "pending": len(self.pending), "resends": self.resends,
                "workers": self.workers, "joins": self.joins[-10:], "closes": dict(self.closes), "errors": dict(self.errors),
                "anomalies": dict(self.anomalies)}
