"""One virtual user over the HTTP long-poll transport (docs/protocol.md, section 7).

The checks are the WebSocket user's (``VirtualUser``): every seq once and in order, resume
with ``since``, resend with the same ref. Only the way events move differs: one request
waits on the stream; a send goes at once in a new request that supersedes it, and only the
answer to the newest request is applied (the server sends a lost answer's events again
while ``ack`` is one behind its ``n``).
"""
import base64
import json
import logging
import os
import random
import time

import gevent
from gevent.lock import BoundedSemaphore
from gevent.pool import Group

from chatload import httpwire, login, wire
from chatload.user import FIRST_DELAY, MAX_DELAY, VirtualUser

logger = logging.getLogger("loadtest")

MAX_CONNECTIONS = 4  # per user: the waiting poll, a send superseding it, stale ones ending
IDLE_REUSE = 4.0  # gunicorn drops keep-alive connections idle 5 s (keepalive): older ones aren't reused
REQUEST_TIMEOUT = 60.0  # a poll lasts up to CHAT_HTTP_POLL_TIMEOUT (25 s by default) and then some
MAX_FRAMES = 20  # CHAT_HTTP_FRAMES' default: more wait for the next request
NO_RETRY = (4401, 4429, 1008)  # closes after which a new stream would be refused the same way


class HttpUser(VirtualUser):
    def __init__(self, name, cookie, room, target, tally, epoch, reconnect=False):
        super().__init__(name, cookie, room, target, tally, epoch, reconnect)
        self.cookie = cookie or ""
        self.csrf = login.parse_cookie(self.cookie).get("csrftoken")
        self.client = base64.urlsafe_b64encode(os.urandom(12)).decode()  # 16 of A-Z a-z 0-9 _ -
        self.stream, self.ack = None, 0
        self.outbox = []  # frames not yet in a request
        self.gen = 0  # requests built: only the answer to number ``gen`` is applied
        self.carrying = False  # the newest request carries frames: new ones wait for its answer
        self.idle, self.in_use = [], set()
        self.slots = BoundedSemaphore(MAX_CONNECTIONS)
        self.greenlets = Group()
        self.failures = 0  # failed requests in a row, for the backoff
        self.refused = None  # a refusal before the first `joined` (raised by ``open``)
        self.closed_at = None  # when the last close came, while coming back from it
        self.contents = {}  # (stream, n) -> events in the answers seen under it, stale ones too

    def open(self, timeout):
        """Start a stream and join; raise when that fails or takes longer than ``timeout``."""
        began = time.time()
        with gevent.Timeout(timeout, TimeoutError(f"not joined after {timeout:.0f} s")):
            self.outbox.append({"type": "join", "room": self.room})
            self.issue()
            self.joined.wait()
        if self.refused is not None:
            raise self.refused
        if self.start is None:
            raise wire.Closed(self.closed or 1006)
        self.tally.open_times.append(time.time() - began)

    def send_raw(self, payload, opcode=wire.OP_TEXT):
        """Queue a client frame; send it now unless a request with frames awaits its answer."""
        if self.closed is not None or self.stopping:
            raise OSError("the stream is closed")
        self.outbox.append(json.loads(payload))
        if not self.carrying:
            self.issue()

    def issue(self):
        """Send a new request (it supersedes the one in flight) from a greenlet of its own."""
        if self.closed is None and not self.stopping:
            self.carrying = bool(self.outbox)
            self.greenlets.spawn(self.exchange)

    def exchange(self):
        with self.slots:  # built only once a connection is ours: the newest request goes last
            frames, self.outbox = self.outbox[:MAX_FRAMES], self.outbox[MAX_FRAMES:]
            self.gen += 1
            gen, stream, ack = self.gen, self.stream, self.ack
            self.carrying = bool(frames)
            body = {"client": self.client, "stream": stream, "ack": ack,
                    "rooms": {self.room: self.last} if self.start is not None else {},
                    "frames": frames, "wait": True}
            self.tally.http["requests"] += 1
            try:
                response, conn = self.post(json.dumps(body, separators=(",", ":")).encode())
            except OSError as exc:
                return self.failed(gen, frames, exc)
        try:
            answer = json.loads(response.body) if response.status == 200 else None
            if answer is not None:
                conn.stream = answer["stream"]  # that connection reaches this stream's worker
                self.check_n(answer)
            if gen != self.gen:  # a newer request went out: its answer is the one that counts
                self.tally.http["stale"] += 1
                if answer is None:  # refused before its frames were handled
                    self.requeue(frames)
                return
            self.on_response(response, answer, frames, stream, ack)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not the answer of section 7
            self.tally.errors["bad_http_answer"] += 1
            self.failed(gen, frames, exc)

    def post(self, body):
        """POST on a kept-alive connection, or a new one; once more on a new one when a reused
        connection turns out closed by the server (its keep-alive ran out as we sent)."""
        conn = self.take()
        head = httpwire.request_head(self.target.http_path, self.target.host, self.target.port,
                                     self.cookie, self.csrf, len(body))
        began = time.monotonic()
        try:
            response = conn.post(head, body, REQUEST_TIMEOUT)
        except OSError:
            self.in_use.discard(conn)
            if not conn.used or time.monotonic() - began > 1:
                raise
            conn = self.take(fresh=True)
            try:
                response = conn.post(head, body, REQUEST_TIMEOUT)
            except OSError:
                self.in_use.discard(conn)
                raise
        self.in_use.discard(conn)
        if conn.open:
            self.idle.append(conn)
        return response, conn

    def take(self, fresh=False):
        """Return a connection: an idle one whose last answer came from our stream (so from its
        worker), else a new one while there are fewer than MAX_CONNECTIONS, else any idle one."""
        now = time.monotonic()
        for conn in [c for c in self.idle if now - c.idle_since > IDLE_REUSE]:
            self.idle.remove(conn)
            conn.close()
        mine = [c for c in self.idle if c.stream == self.stream]
        if fresh or not self.idle or (not mine and len(self.idle) + len(self.in_use) < MAX_CONNECTIONS):
            conn = httpwire.Connection(self.target.host, self.target.port)
        else:
            conn = (mine or self.idle)[-1]
            self.idle.remove(conn)
        self.in_use.add(conn)
        return conn

    def on_response(self, response, answer, frames, stream, ack):
        """Apply the answer to the newest request, then send the next one."""
        if answer is None:
            return self.on_refusal(response, frames)
        self.failures = 0
        if answer.get("superseded"):  # an older request reached the server after this one
            self.tally.http["superseded_newest"] += 1
            return self.issue()
        self.tally.http["applied"] += 1
        events = answer.get("events") or ()
        if answer["stream"] != stream:
            self.tally.http["new_streams"] += stream is not None
        elif answer["n"] != ack + (1 if events else 0):
            self.tally.http["bad_n"] += 1
        self.stream, self.ack = answer["stream"], answer["n"]
        self.tally.http["events"] += len(events)
        now = time.time()
        for event in events:
            self.on_event(event, now)
        if answer.get("close"):
            return self.on_close(answer["close"].get("code"))
        self.issue()

    def check_n(self, answer):
        """Count answers that carry other events under an n already seen on the stream: a
        client that applies one of them and acks that n never gets the other's extra events."""
        events = answer.get("events")
        if not events or answer.get("superseded"):
            return
        key, count = (answer["stream"], answer["n"]), len(events)
        if self.contents.setdefault(key, count) != count:
            self.tally.http["n_reused"] += 1
        if len(self.contents) > 16:
            del self.contents[next(iter(self.contents))]

    def on_refusal(self, response, frames):
        """Handle a status other than 200: wait and retry (503, 429 with Retry-After), or stop."""
        try:
            answer = json.loads(response.body)
        except ValueError:
            answer = {}
        close = answer.get("close") if isinstance(answer, dict) else None
        wait = response.retry_after()
        if response.status in (429, 503) and wait is not None and not (close and close.get("code") == 4429):
            self.tally.busy += response.status == 503
            self.tally.http["throttled"] += response.status == 429
            self.requeue(frames)
            # Our own jitter on top: Retry-After has whole seconds only.
            self.greenlets.spawn_later(wait + random.random(), self.issue)
            return
        if close:
            return self.on_close(close.get("code"))
        if self.start is None:
            self.refused = wire.HandshakeError(response.status, response.body[:200].decode(errors="replace"))
        self.on_close(f"http {response.status}")

    def failed(self, gen, frames, exc):
        """A request got no answer: send its frames again (refs make that safe) after a backoff."""
        self.tally.http["failed"] += 1
        self.requeue(frames)
        if gen != self.gen:
            return
        self.failures += 1
        ceiling = min(MAX_DELAY, FIRST_DELAY * 2 ** (self.failures - 1))
        logger.debug("%s: request failed (%s); again in up to %.1f s", self.name, exc, ceiling)
        self.greenlets.spawn_later(ceiling / 2 + random.random() * ceiling / 2, self.again, gen)

    def again(self, gen):
        if gen == self.gen:  # nothing went out meanwhile (a send would have)
            self.issue()

    def requeue(self, frames):
        """Put back the frames of a request that may not have been handled, if still wanted."""
        wanted = [f for f in frames if f.get("ref") in self.pending or (f["type"] == "join" and self.start is None)]
        if wanted:
            self.outbox[:0] = wanted
            self.tally.resent += sum(1 for f in wanted if f["type"] == "send")
            if not self.carrying:
                self.issue()

    def on_close(self, code):
        """The stream ended: come back with a new one (``--reconnect``), or stay closed."""
        self.live.clear()
        if self.stopping:
            return
        if self.start is not None and self.live_since is not None:
            self.tally.closes[code] += 1
        self.closed = code
        self.joined.set()
        if self.reconnect and self.start is not None and code not in NO_RETRY and self.comeback is None:
            self.comeback = self.greenlets.spawn(self.come_back, time.time())

    def come_back(self, closed_at):
        """After the server's hint (or a backoff), start a new stream that resumes with ``since``."""
        delay = self.hint + random.uniform(0, FIRST_DELAY) if self.hint is not None else \
            FIRST_DELAY / 2 + random.random() * FIRST_DELAY / 2
        gevent.sleep(delay)
        self.stream, self.ack, self.hint, self.closed = None, 0, None, None
        self.closed_at, self.live_since = closed_at, None
        self.issue()

    def on_joined(self, obj):
        super().on_joined(obj)
        if self.closed_at is not None:  # back after a close: count it, resend what never came back
            now = time.time()
            self.tally.reconnects += 1
            self.tally.downtime.append(now - self.closed_at)
            self.tally.back_at.append(now)
            self.closed_at, self.comeback = None, None
            self.resend()

    def stop(self):
        """Record what this user saw, and drop its requests (its stream lingers, then ends)."""
        self.record()
        self.greenlets.kill(block=False)
        for conn in [*self.idle, *self.in_use]:
            conn.close()
        self.idle, self.in_use = [], set()
