"""One virtual user: a socket in one room that checks every seq it receives, and may send.

Everything a load process counts goes into one ``Tally``; ``report.merge`` adds tallies of
several processes together.
"""
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


class VirtualUser:
    def __init__(self, name, cookie, room, target, tally, epoch):
        self.name, self.cookie, self.room, self.target = name, cookie, room, target
        self.tally, self.epoch = tally, epoch
        self.dialect = wire.DIALECTS[target.dialect]
        self.sock, self.buffer, self.reader = None, bytearray(), None
        self.joined, self.closed, self.stopping = Event(), None, False
        self.start = self.last = None
        self.unique, self.missing, self.pending = 0, set(), {}

    def open(self, timeout):
        """Connect and join; raise when that fails or takes longer than ``timeout``."""
        began = time.time()
        with gevent.Timeout(timeout, TimeoutError(f"not joined after {timeout:.0f} s")):
            self.sock, rest = wire.open_socket(self.target.host, self.target.port,
                                               self.target.path(self.name), self.cookie, timeout)
            self.buffer += rest
            self.dialect.greet(self)
            self.send({"type": "join", "room": self.room})
            self.reader = gevent.spawn(self.read_loop)
            self.joined.wait()
        if self.start is None:
            raise wire.Closed(self.closed or 1006)
        self.tally.open_times.append(time.time() - began)

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
        self.joined.set()
        if not self.stopping and self.start is not None:
            self.tally.closes[code] += 1
        self.sock.close()

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
        if obj is None:
            return
        kind = obj.get("type")
        if kind == "message" and self.start is not None:
            body = obj["body"]
            scheduled = float(body[3:body.index(" ", 3)]) if body.startswith(MARK) else None
            self.on_message(obj["seq"], scheduled, obj.get("ref"), time.time())
        elif kind == "joined":
            self.start = self.last = obj["seq"]
            self.joined.set()
        elif kind == "error":
            self.tally.errors[obj.get("code", "?")] += 1
            self.pending.pop(obj.get("ref"), None)

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
        step = self.pending.pop(ref, None)
        if step is not None:
            tally.acked[step] += 1

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
                if at >= ends or step >= limit[0] or self.closed is not None:
                    break
                delay = at - time.time()
                if delay > 0:
                    gevent.sleep(delay)
                    if step >= limit[0] or self.closed is not None:  # changed while asleep
                        break
                elif -delay > LATE:
                    tally.late += 1
                    tally.max_lag = max(tally.max_lag, -delay)
                ref = f"{run_id}.{step}.{n}"
                body = f"{MARK}{at:.6f} "
                body += "x" * max(1, size - len(body))
                self.pending[ref] = step
                try:
                    self.send({"type": "send", "room": self.room, "body": body, "ref": ref})
                except OSError:
                    break
                tally.sent[f"{step} {self.room}"] += 1
                n += 1

    def stop(self):
        """Close with 1000 and record what this socket saw of its room."""
        self.stopping = True
        if self.start is not None and self.closed is None:
            room = self.tally.rooms.setdefault(self.room, [0, 0, 0])
            room[0] += 1
            room[1] += self.start + self.unique
            room[2] = max(room[2], self.last)
        if self.sock is not None and self.closed is None:
            try:
                self.send_raw((1000).to_bytes(2, "big"), wire.OP_CLOSE)
            except OSError:
                pass
            self.sock.close()
        if self.reader is not None:
            self.reader.kill(block=False)
