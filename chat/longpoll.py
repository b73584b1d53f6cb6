"""The HTTP long-poll transport: a client session (chat/session.py) moved by requests.

A stream is the HTTP counterpart of one WebSocket (docs/protocol.md, section 7). Each request
hands it client frames and takes its outbox as one response, waiting up to the poll timeout
when there is nothing to take. One request at a time: a newer request on a stream supersedes
the waiting one. The events of the last response are kept until the client acknowledges them
(``ack``), so a lost response is sent again. A stream lives in the worker that started it,
while requests keep coming; any other worker starts a new stream and resumes the client from
the rooms and seqs the request names, so no request needs a particular worker.

A waiting request holds its greenlet and its socket, no database connection.
"""
import logging

import gevent
from gevent.event import Event

from chat import protocol
from chat.ratelimit import TokenBucket
from chat.session import ClientSession
from chat.wsmends import frame_payload

logger = logging.getLogger(__name__)

#: Close code logged for a stream that ended because its client stopped asking.
GONE = 1001


class Superseded(Exception):
    """A newer request took over the stream this one waited on."""


class HttpStream(ClientSession):
    """One client's session across its requests to this worker."""

    kind = "stream"
    log = logger

    def __init__(self, user, client_id, *, linger, request_rate, request_burst, registry,
                 **session):
        super().__init__(user, **session)
        self.client_id = client_id
        self.linger = linger
        self.registry = registry
        self.requests = TokenBucket(request_rate, request_burst, self.clock)
        self.n = 0  # responses of this stream that carried events
        self.unacked = []  # the events (JSON bytes) of response n, until the client acks it
        self.ended = None  # (code, reason) once the stream ended
        self._wake = None  # the waiting request's event
        self._consumer = None  # the request being served
        self._linger_timer = None

    # -- requests -----------------------------------------------------------------------------

    def continues(self, user_id, session_key, stream_id, ack):
        """Tell whether a request with these may go on with this stream."""
        return (self.ended is None and stream_id == self.conn_id and user_id == self.user_id
                and session_key == self.session_key and ack in (self.n, self.n - 1))

    def resume(self, rooms):
        """Join ``rooms`` ({slug: since}) as a new stream does: one ``joined`` each."""
        # The client held these rooms already: resuming costs no frame budget of its own.
        budget, self.db_frames = self.db_frames, TokenBucket(1.0, len(rooms) + 1, self.clock)
        try:
            for slug, since in rooms.items():
                self.handle_frame({"type": "join", "room": slug, "since": since})
        finally:
            self.db_frames = budget

    def handle_frame(self, frame):
        """Handle one frame of a request body (already JSON: encoded again for the one path)."""
        self.handle(protocol.encode(frame).decode())

    def exchange(self, frames, ack, wait, timeout):
        """Serve one request: ``frames`` handled, then the response body (bytes)."""
        token = object()
        self._take_over(token)
        try:
            resend = self.unacked if ack == self.n - 1 else []
            self.unacked = resend
            for frame in frames:
                self.handle_frame(frame)
            if wait and not resend:
                self._wait(token, timeout)
            if self._consumer is not token:
                raise Superseded
            return self._respond(resend)
        finally:
            if self._consumer is token:
                self._consumer = self._wake = None
                self._start_linger()

    def _take_over(self, token):
        if self._wake is not None:
            self._wake.set()  # the waiting request sees it is no longer the consumer
        self._consumer, self._wake = token, None
        if self._linger_timer is not None:
            self._linger_timer.close()
            self._linger_timer = None

    def _wait(self, token, timeout):
        deadline = self.clock() + timeout
        while self._consumer is token and not self.outbox.frames and self.outbox.closing is None:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            self._wake = Event()
            self._wake.wait(remaining)

    def _respond(self, resend):
        """Take the outbox as this response's events; end the stream after a close."""
        new = [frame_payload(frame) for frame in self.outbox.take_all()]
        events = resend + new
        if new:
            if not resend:
                self.n += 1
            self.unacked = events
        closing = self.outbox.closing
        if closing is not None:
            self.end(*closing)
        return response_body(self.conn_id, self.n, events, closing)

    # -- the transport ------------------------------------------------------------------------

    def _flush_soon(self):
        if self._wake is not None:
            self._wake.set()
        elif self.outbox.closing is not None and self._consumer is None:
            # No request to tell: end now (presence, the budget); the next request starts anew.
            gevent.get_hub().loop.run_callback(self._end_if_idle)

    def _end_if_idle(self):
        if self._consumer is None and self.ended is None and self.outbox.closing is not None:
            self.end(*self.outbox.closing)

    def _start_linger(self):
        if self.ended is None:
            self._linger_timer = gevent.get_hub().loop.timer(self.linger)
            self._linger_timer.start(self._lingered)

    def _lingered(self):
        if self._consumer is None and self.ended is None:
            logger.debug("stream idle conn=%s user=%s for %ss: ending", self.conn_id,
                         self.username, self.linger)
            self.end(GONE, "no request for a while")

    def end(self, code, reason=""):
        """End the stream: unregister it (idempotent)."""
        if self.ended is not None:
            return
        self.ended = (code, reason)
        self.closing = True
        if self._linger_timer is not None:
            self._linger_timer.close()
            self._linger_timer = None
        self.registry.discard(self)
        self.finish(code)


def response_body(stream_id, n, events, closing=None, superseded=False):
    """Build a response's JSON from events that are JSON already (no decoding them again)."""
    head = b'{"stream":"%s","n":%d,"events":[' % (stream_id.encode(), n)
    tail = b"]"
    if closing is not None:
        tail += b',"close":' + close_object(*closing)
    if superseded:
        tail += b',"superseded":true'
    return head + b",".join(events) + tail + b"}"


def close_object(code, reason):
    return protocol.encode({"code": code, "reason": reason})


class Streams:
    """This worker's streams by client id: at most one per client."""

    def __init__(self):
        self.by_client = {}

    def find(self, client_id, user_id, session_key, stream_id, ack):
        """Return the stream this request continues, or None (a new one must start)."""
        stream = self.by_client.get(client_id)
        if stream is not None and stream.continues(user_id, session_key, stream_id, ack):
            return stream
        return None

    def add(self, stream):
        """Hold ``stream``; end the client's older stream here, which it stopped using."""
        old = self.by_client.get(stream.client_id)
        self.by_client[stream.client_id] = stream
        if old is not None and old.ended is None:
            old.end(GONE, "replaced by a new stream")

    def discard(self, stream):
        if self.by_client.get(stream.client_id) is stream:
            del self.by_client[stream.client_id]

    def __len__(self):
        return len(self.by_client)
