"""One virtual user: a socket in one room that checks every seq it receives, and may send.

Everything a load process counts goes into one ``Tally``; ``report.merge`` adds tallies of
several processes together.
"""
import random
import time
from array import array
from collections import Counter

import gevent
from gevent.event import Event

from chatload import wire

MARK = "lt "  # bodies the load test sends: "lt <scheduled send time> <padding>"
LATE = 0.005  # a send this much after its scheduled time counts as late


class Tally:
    """What one load process counted."""

    def __init__(self):
        self.open_times = array("d")  # seconds from connecting to `joined`, per socket
        self.failed = Counter()  # sockets that never joined, by reason
        self.closes = Counter()  # close codes of sockets that closed before the end
        self.errors = Counter()  # `error` events by code
        self.sent = Counter()  # "step room" -> sends issued
        self.acked = Counter()  # step -> sends whose broadcast came back to the sender
        self.late, self.max_lag = 0, 0.0
        self.sent_at = array("d")  # per delivery: scheduled send time (seconds after epoch)
        self.latency = array("d")  # per delivery: arrival minus scheduled send time
        self.gaps = self.duplicates = self.reordered = self.foreign = 0
        self.rooms = {}  # room -> [sockets that stayed, sum of (start seq + unique seqs), max seq]
        self.cpu = 0.0  # the load process's own CPU seconds
        self.open_seconds = 0.0  # from the first connect to the last socket joined (or failed)
        self.busy = 0  # handshakes the server answered 503 (each retried after its Retry-After)
        self.hints = 0  # `reconnect` events (the server said when to come back)
        self.reconnects = 0  # sockets back and rejoined with `since` after a close
        self.downtime = array("d")  # per reconnect: seconds from the close to `joined`
        self.back_at = array("d")  # per reconnect: when `joined` came (Unix time)
        self.not_back = 0  # sockets still reconnecting when the run ended
        self.resets = 0  # rejoins where the room's seq had gone back (a server that lost its state)
        self.resent = 0  # sends repeated with the same ref after a reconnect
        self.by_send = Counter()  # scheduled send time -> deliveries (catches a resend stored twice)
        self.http = Counter()  # the HTTP transport's requests and answers (chatload/longpoll.py)


#: The load client's own backoff between reconnection attempts (as the browser client's).
FIRST_DELAY, MAX_DELAY = 0.5, 10.0
REJOIN_TIMEOUT = 60.0  # seconds one reconnection attempt may take, 503s included


class VirtualUser:
    def __init__(self, name, cookie, room, target, tally, epoch, reconnect=False):
        self.name, self.cookie, self.room, self.target = name, cookie, room, target
        self.tally, self.epoch, self.reconnect = tally, epoch, reconnect
        self.dialect = wire.DIALECTS[target.dialect]
        self.sock, self.buffer, self.reader = None, bytearray(), None
        self.joined, self.closed, self.stopping = Event(), None, False
        self.live = Event()  # joined and not closed since: sends may go
        self.start = self.last = None
        self.unique, self.missing, self.pending = 0, set(), {}  # pending: ref -> (step, frame)
        self.hint, self.comeback = None, None  # the server's `reconnect` delay; the greenlet
        self.generation = 0  # connections that reached `joined`: a pending send's tells where it went

    def open(self, timeout):
        """Connect and join; raise when that fails or takes longer than ``timeout``.

        A 503 (the server's admission) is retried after its Retry-After, within ``timeout``.
        """
        began = time.time()
        with gevent.Timeout(timeout, TimeoutError(f"not joined after {timeout:.0f} s")):
            self._connect_when_admitted()
        if self.start is None:
            raise wire.Closed(self.closed or 1006)
        self.tally.open_times.append(time.time() - began)

    def _connect_when_admitted(self, since=None):
        while True:
            try:
                return self._connect(since)
            except wire.HandshakeError as refused:
                if refused.status != 503:
                    raise
                self.tally.busy += 1
                # Our own jitter on top: Retry-After has whole seconds only.
                gevent.sleep((refused.retry_after or 1) + random.random())

    def _connect(self, since):
        self.joined, self.buffer, self.hint = Event(), bytearray(), None
        self.sock, rest = wire.open_socket(self.target.host, self.target.port,
                                           self.target.path(self.name), self.cookie)
        self.buffer += rest
        self.closed = None
        self.dialect.greet(self)
        join = {"type": "join", "room": self.room}
        if since is not None:
            join["since"] = since
        self.send(join)
        self.reader = gevent.spawn(self.read_loop)
        self.joined.wait()
        if self.closed is not None:
            raise wire.Closed(self.closed)

    def send(self, obj):
        self.send_raw(self.dialect.encode(obj))

    def send_raw(self, payload, opcode=wire.OP_TEXT):
        self.sock.sendall(wire.frame(opcode, payload))

    def read_loop(self):
        code = 1006
        try:
            self.on_data()
            while True:
                data = self.sock.recv(wire.RECV_SIZE)
                if not data:
                    break
                self.buffer += data
                self.on_data()
        except wire.Closed as closed:
            code = closed.code
        except OSError:
            pass
        self.closed = code
        self.live.clear()
        self.joined.set()
        self.sock.close()
        if not self.stopping and self.start is not None and self.live_since is not None:
            self.tally.closes[code] += 1
            if self.reconnect and self.comeback is None:
                self.comeback = gevent.spawn(self.come_back, time.time())

    live_since = None  # when this connection's `joined` came (None: it never joined)

    def come_back(self, closed_at):
        """Reconnect after a close: wait the server's hint (or back off), rejoin with ``since``."""
        attempt, delay = 0, self.hint
        if delay is not None:
            delay += random.uniform(0, FIRST_DELAY)  # our own jitter, as the browser adds
        while not self.stopping:
            if delay is None:  # equal jitter: half the ceiling fixed, half random
                ceiling = min(MAX_DELAY, FIRST_DELAY * 2 ** attempt)
                delay = ceiling / 2 + random.random() * ceiling / 2
            gevent.sleep(delay)
            delay, attempt = None, attempt + 1
            try:
                self.live_since = None
                with gevent.Timeout(REJOIN_TIMEOUT, TimeoutError):
                    self._connect_when_admitted(since=self.last)
            except (OSError, wire.HandshakeError, wire.Closed, TimeoutError):
                if self.sock is not None:
                    self.sock.close()
                continue
            now = time.time()
            self.tally.reconnects += 1
            self.tally.downtime.append(now - closed_at)
            self.tally.back_at.append(now)
            self.comeback = None
            self.resend()
            return

    def resend(self):
        """Send again, with the same refs, what earlier connections sent and never saw come back.

        Only those: a send made on this connection gets its broadcast here (or in `joined`)."""
        for ref, (step, payload, generation) in list(self.pending.items()):
            if generation == self.generation:
                continue
            try:
                self.send_raw(payload)
            except OSError:
                return
            self.pending[ref] = (step, payload, self.generation)
            self.tally.resent += 1

    def on_data(self):
        for first, payload in wire.parse(self.buffer):
            opcode = first & 0x0F
            if opcode == wire.OP_TEXT:
                self.on_text(payload)
            elif opcode == wire.OP_PING:
                self.send_raw(payload, wire.OP_PONG)
            elif opcode == wire.OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                try:
                    self.send_raw(payload[:2], wire.OP_CLOSE)
                except OSError:
                    pass
                raise wire.Closed(code)

    def on_text(self, payload):
        if self.start is not None:
            fields = wire.message_fields(payload)
            if fields is not None:
                return self.on_message(*fields, time.time())
        obj, reply = self.dialect.decode(payload)
        if reply is not None:
            self.send_raw(reply)
        if obj is not None:
            self.on_event(obj, time.time())

    def on_event(self, obj, now):
        """Check and count one server event (a decoded JSON object), whatever carried it."""
        kind = obj.get("type")
        if kind == "message" and self.start is not None:
            self.on_message(obj["seq"], scheduled_of(obj), obj.get("ref"), now)
        elif kind == "joined":
            self.on_joined(obj)
        elif kind == "reconnect":
            self.hint = float(obj.get("after", 0))
            self.tally.hints += 1
        elif kind == "error":
            self.tally.errors[obj.get("code", "?")] += 1
            self.pending.pop(obj.get("ref"), None)

    def on_joined(self, obj):
        if self.start is None:
            self.start = self.last = obj["seq"]
        else:  # a rejoin with `since`: what was missed comes first, checked like live ones
            if obj["seq"] < self.last:  # the server lost the room's seqs: count from its new ones
                self.tally.resets += 1
                self.last = obj["seq"]
                self.missing.clear()
            now = time.time()
            for message in obj.get("messages") or ():
                self.on_message(message["seq"], scheduled_of(message), message.get("ref"), now)
        self.live_since = time.time()
        self.generation += 1
        self.live.set()
        self.joined.set()

    def on_message(self, seq, scheduled, ref, now):
        last, tally = self.last, self.tally
        if seq == last + 1:
            self.last = seq
        elif seq > last:
            tally.gaps += 1
            self.missing.update(range(last + 1, seq))
            self.last = seq
        elif seq in self.missing:
            self.missing.discard(seq)
            tally.reordered += 1
        else:
            tally.duplicates += 1
            return
        self.unique += 1
        if scheduled is None:
            tally.foreign += 1
            return
        tally.sent_at.append(scheduled - self.epoch)
        tally.latency.append(now - scheduled)
        tally.by_send[self.room, scheduled] += 1
        pending = self.pending.pop(ref, None)
        if pending is not None:
            tally.acked[pending[0]] += 1

    def send_steps(self, plan, limit, phase, run_id, size):
        """Send at the planned rates (open loop: a late send still goes, and is counted)."""
        tally = self.tally
        for step, (begins, ends, interval) in enumerate(plan):
            if step >= limit[0]:
                break
            if interval is None:
                continue
            n = 0
            while True:
                at = begins + (phase + n) * interval
                if at >= ends or step >= limit[0] or not self.may_send(ends):
                    break
                delay = at - time.time()
                if delay > 0:
                    gevent.sleep(delay)
                    if step >= limit[0] or not self.may_send(ends):  # changed while asleep
                        break
                elif -delay > LATE:
                    tally.late += 1
                    tally.max_lag = max(tally.max_lag, -delay)
                ref = f"{run_id}.{step}.{n}"
                body = f"{MARK}{at:.6f} "
                body += "x" * max(1, size - len(body))
                payload = self.dialect.encode({"type": "send", "room": self.room, "body": body, "ref": ref})
                self.pending[ref] = (step, payload, self.generation)
                try:
                    self.send_raw(payload)
                except OSError:  # kept pending: resent with the same ref once back
                    if not self.reconnect:
                        del self.pending[ref]
                        break
                tally.sent[f"{step} {self.room}"] += 1
                n += 1

    def may_send(self, ends):
        """Tell whether this socket is up; a reconnecting one waits for its rejoin until ``ends``."""
        if self.live.is_set():  # joined, not closed since (a new socket sends only after `joined`)
            return True
        if not self.reconnect or self.stopping:
            return False
        self.live.wait(max(0.0, ends - time.time()))
        return self.live.is_set()

    def stop(self):
        """Close with 1000 and record what this socket saw of its room."""
        self.record()
        if self.sock is not None and self.closed is None:
            try:
                self.send_raw((1000).to_bytes(2, "big"), wire.OP_CLOSE)
            except OSError:
                pass
            self.sock.close()
        if self.reader is not None:
            self.reader.kill(block=False)

    def record(self):
        """Stop coming back, and add what this user saw of its room to the tally."""
        self.stopping = True
        if self.comeback is not None:
            self.comeback.kill(block=False)
            self.tally.not_back += 1
        if self.start is not None and self.closed is None:
            room = self.tally.rooms.setdefault(self.room, [0, 0, 0])
            room[0] += 1
            room[1] += self.start + self.unique
            room[2] = max(room[2], self.last)


def scheduled_of(message):
    """Return the scheduled send time a load-test body carries, or None for other bodies."""
    body = message.get("body", "")
    return float(body[3:body.index(" ", 3)]) if body.startswith(MARK) else None
