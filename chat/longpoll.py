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

    def __init__(self, user, client_id, *, linger, min_interval, request_rate, request_burst,
                 registry, limits=None, **session):
        super().__init__(user, **session)
        self.client_id = client_id
        self.linger = linger
        self.min_interval = min_interval
        self.responded_at = float("-inf")
        self.registry = registry
        self.requests = TokenBucket(request_rate, request_burst, self.clock)
        # What a client must keep to (its timeouts, frames, pace): told until it acks an answer.
        self.limits = limits
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
                # A bare poll is answered at most once per ``min_interval``: a client in a busy
                # room gets the events of that interval together. Replies to frames go at once.
                paced = self.responded_at + self.min_interval if not frames else 0.0
                self._wait(token, timeout, paced)
            if self._consumer is not token:
                raise Superseded
            self.responded_at = self.clock()
            return self._respond(resend, self.limits if ack == 0 else None)
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

    def _wait(self, token, timeout, not_before):
        """Wait for an event (or a close) up to ``timeout``, then until ``not_before``."""
        deadline = self.clock() + timeout
        while self._consumer is token and not self.outbox.frames and self.outbox.closing is None:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            self._wake = Event()
            self._wake.wait(remaining)
        # Paced: what arrives meanwhile goes in this response, not in one request per event.
        while self._consumer is token and self.outbox.closing is None:
            remaining = min(not_before, deadline) - self.clock()
            if remaining <= 0:
                return
            self._wake = Event()
            self._wake.wait(remaining)

    def _respond(self, resend, limits=None):
        """Take the outbox as this response's events; end the stream after a close.

        A resend goes alone, under the same ``n``: had new events joined it, an older request
        arriving after the newest (two connections race) would answer ``n`` with events the
        client never applies, and then acks.
        """
        if resend:
            events = resend
        else:
            events = [frame_payload(frame) for frame in self.outbox.take_all()]
            if events:
                self.n += 1
                self.unacked = events
        closing = self.outbox.closing if not self.outbox.frames else None
        if closing is not None:
            self.end(*closing)
        return response_body(self.conn_id, self.n, events, closing, limits=limits)

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


def response_body(stream_id, n, events, closing=None, superseded=False, limits=None):
    """Build a response's JSON from events that are JSON already (no decoding them again)."""
    head = b'{"stream":"%s","n":%d,"events":[' % (stream_id.encode(), n)
    tail = b"]"
    if limits is not None:
        tail += b',"limits":' + protocol.encode(limits)
    if closing is not None:
        tail += b',"close":' + close_object(*closing)
    if superseded:
        tail += b',"superseded":true'
    return head + b",".join(events) + tail + b"}"


def close_object(code, reason):
    return protocol.encode({"code": code, "reason": reason})


class Streams:
    """This worker's streams by user and client id: at most one per client.

    Keyed by the user too: a client id seen by someone else cannot end another's stream.
    """

    def __init__(self):
        self.by_client = {}

    def find(self, client_id, user_id, session_key, stream_id, ack):
        """Return the stream this request continues, or None (a new one must start)."""
        stream = self.by_client.get((user_id, client_id))
        if stream is not None and stream.continues(user_id, session_key, stream_id, ack):
            return stream
        return None

    def add(self, stream):
        """Hold ``stream``; end the client's older stream here, which it stopped using."""
        key = (stream.user_id, stream.client_id)
        old = self.by_client.get(key)
        self.by_client[key] = stream
        if old is not None and old.ended is None:
            old.end(GONE, "replaced by a new stream")

    def discard(self, stream):
        key = (stream.user_id, stream.client_id)
        if self.by_client.get(key) is stream:
            del self.by_client[key]

    def __len__(self):
        return len(self.by_client)
