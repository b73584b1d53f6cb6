"""The worker's room hub: room -> local sessions, presence, and ordered fan-out.

Events travel through the broker to the hub of every worker, this one included. A hub
builds each event's frame once (server frames are unmasked, so the bytes are the same for
every recipient) and hands those bytes to each local member's queue. ``message`` events
carry a seq: each room hands them on in seq order, holding early ones back and reading a
missing seq from the database when it does not arrive within ``gap_wait`` seconds, so a
slow or lossy broker costs latency, never a message.

Each broker payload carries the wall-clock time of its ``publish``. For each ``message``
event a hub observes ``chat_broadcast_latency_seconds`` once, when it has handed the event to
its local sockets' queues (messages read from the database instead are not observed), and
counts the messages queued, once per message with the number of recipients.
"""
import json
import logging
import time
import weakref
from collections import Counter

import gevent

from chat import metrics
from chat.protocol import encode
from chat.wsmends import encode_frame

logger = logging.getLogger(__name__)

#: The topic of events for every socket, whatever rooms it joined (announcements).
EVERYONE = "*"


class Channel:
    """One room as this worker sees it."""

    def __init__(self, hub, slug):
        self.hub = hub
        self.slug = slug
        self.room_id = None
        self.sessions = set()
        self.present = set()  # sessions counted in presence
        self.presence = Counter()  # username -> sockets of that user in the room
        self.next_seq = None  # the seq to hand on next; None until a join reads the room
        self.pending = {}  # seq -> (frame, publish time), arrived early
        self.repairer = None

    def start_at(self, room_id, seq):
        """Begin handing on after ``seq`` unless already begun; return the cursor's seq."""
        self.room_id = room_id
        if self.next_seq is not None:
            return self.next_seq - 1
        self.next_seq = seq + 1
        self.pending = {s: f for s, f in self.pending.items() if s > seq}
        self._flush()  # to the sessions attached, which hold it until their ``joined``
        return seq

    def offer(self, seq, frame, published=None):
        """Hand on ``frame`` of ``seq`` now, or once the seqs before it were handed on."""
        if self.next_seq is not None and seq < self.next_seq:
            return  # already handed on (a resend, or the database was faster)
        self.pending[seq] = (frame, published)
        self._flush()

    def broadcast(self, frame, skip_user=None):
        """Hand ``frame`` (an event without seq) to every member but ``skip_user``'s sockets."""
        for session in list(self.sessions):
            if skip_user is None or session.username != skip_user:
                session.deliver(self.slug, None, frame)

    def _flush(self):
        if self.next_seq is None:
            return
        while self.next_seq in self.pending:
            self._hand_on(self.next_seq, *self.pending.pop(self.next_seq))
        if self.pending and self.repairer is None:
            self.repairer = gevent.spawn(self._repair)

    def _hand_on(self, seq, frame, published=None):
        self.next_seq = seq + 1
        if frame is None:  # a deleted message, whose seq is passed over
            return
        queued = 0
        for session in list(self.sessions):
            if session.deliver(self.slug, seq, frame):
                queued += 1
        if queued:  # one update per message, not per recipient: this loop is the hot path
            metrics.MESSAGES_DELIVERED.inc(queued)
        if published is not None:
            # Clocks of two hosts may disagree by a little: never a negative latency.
            metrics.BROADCAST_LATENCY.observe(max(0.0, time.time() - published))

    def _repair(self):
        """While seqs are missing, wait for them, then read them from the database."""
        try:
            while self.pending and self.sessions:
                gevent.sleep(self.hub.gap_wait)
                if self.pending and self.next_seq not in self.pending:
                    self._read(self.next_seq, min(self.pending) - 1)
                while self.next_seq in self.pending:
                    self._hand_on(self.next_seq, *self.pending.pop(self.next_seq))
        finally:
            self.repairer = None

    def read_now(self, upto=None):
        """Read what follows the cursor from the database now (up to ``upto``, or all)."""
        if self.next_seq is not None and (upto is None or upto >= self.next_seq):
            gevent.spawn(self._read_and_flush, upto)

    def _read_and_flush(self, upto):
        # Retried until it succeeds: after a broker reconnect this read is the only way to
        # what was published meanwhile, and its first try may meet a pooled connection that
        # the database outage broke (test_faults: the other worker's sockets missed a message).
        delay = self.hub.gap_wait
        while not self._read(self.next_seq, upto) and self.sessions:
            gevent.sleep(delay)
            delay = min(delay * 2, 5)
        self._flush()

    def _read(self, first, upto):
        """Hand on seqs ``first``..``upto`` from the database; return False if the read failed."""
        logger.info("room %s: reading seqs %s-%s from the database", self.slug, first, upto or "")
        try:
            found = self.hub.fetch(self.room_id, self.slug, first - 1, upto)
        except Exception:
            logger.exception("room %s: reading seqs %s-%s failed; will retry", self.slug, first, upto)
            return False
        for seq, event in found:
            if seq >= self.next_seq:
                self._hand_on(seq, None if event is None else encode_frame(encode(event)))
        return True


class Hub:
    """Room -> local sessions for one worker, fed by the broker."""

    def __init__(self, broker, fetch, presence, gap_wait=0.5):
        self.broker = broker
        self.fetch = fetch  # (room_id, slug, after, upto) -> [(seq, event or None)]
        self.presence = presence  # global presence (chat/presence.py)
        self.gap_wait = gap_wait
        self.channels = {}
        self.sessions = weakref.WeakSet()  # every open socket of this worker
        broker.start(self.receive, self.resync)

    def attach(self, session, slug):
        """Subscribe ``session`` to ``slug``'s events (before reading the room: none is missed)."""
        channel = self.channels.get(slug)
        if channel is None:
            channel = self.channels[slug] = Channel(self, slug)
        channel.sessions.add(session)
        return channel

    def enter(self, session, slug):
        """Count ``session`` in the room's presence; return the usernames present anywhere."""
        channel = self.channels[slug]
        user = session.username
        arriving = session not in channel.present
        if arriving:
            channel.present.add(session)
            channel.presence[user] += 1
        first_anywhere, names = self.presence.arrive(slug, user)
        if arriving and channel.presence[user] == 1 and first_anywhere:
            self.publish(slug, presence_event(slug, joined=[user]), skip_user=user)
        return names

    def detach(self, session, slug):
        """Unsubscribe ``session``; the user's last socket anywhere ends their presence."""
        channel = self.channels.get(slug)
        if channel is None:
            return
        channel.sessions.discard(session)
        user, gone_here = session.username, False
        if session in channel.present:
            channel.present.discard(session)
            channel.presence[user] -= 1
            if not channel.presence[user]:
                del channel.presence[user]
                gone_here = True
        if not channel.sessions and self.channels.get(slug) is channel:
            if channel.repairer is not None:
                channel.repairer.kill(block=False)
            del self.channels[slug]
        if gone_here:
            self._depart(slug, user)  # last: it waits on the database, and others run meanwhile

    def _depart(self, slug, user):
        try:
            gone = self.presence.depart(slug, user)
        except Exception:  # runs as sockets close: the row expires with the heartbeats instead
            logger.exception("could not record that %s left %s", user, slug)
            return
        if gone:
            self.publish(slug, presence_event(slug, left=[user]))

    def maintain(self, interval):
        """Every ``interval`` seconds: refresh this worker's presence, expire dead workers'."""
        while True:
            gevent.sleep(interval)
            try:
                self.presence.heartbeat()
                for slug, user in self.presence.expire():
                    self.publish(slug, presence_event(slug, left=[user]))
            except Exception:
                logger.exception("presence upkeep failed; trying again in %s s", interval)

    def publish(self, slug, event, seq=None, skip_user=None):
        """Send ``event`` to the room's members in every worker.

        A message (an event with a seq, already committed) reaches this worker's sockets at
        once, not after a round trip through the broker: the sender hears its own message
        sooner, and the broker's echo is dropped by the room's seq cursor.
        """
        payload = self.payload(event, seq, skip_user)
        if seq is not None:
            self.receive(slug, payload)
        try:
            self.broker.publish(slug, payload)
        except Exception:
            # What was committed is not lost: other workers read it from the database when
            # their broker is back or the next seq shows the gap.
            if seq is not None:
                logger.exception("publishing to %s failed (seq %s); other workers will catch up", slug, seq)
                return
            logger.exception("publishing to %s failed; delivering in this worker only", slug)
            self.receive(slug, payload)

    @staticmethod
    def payload(event, seq=None, skip_user=None):
        """Build a broker payload: a small JSON header line, then the event's JSON."""
        # "t": when it was published (wall clock: hubs may run on other hosts).
        header = json.dumps({"seq": seq, "skip": skip_user, "t": time.time()},
                            separators=(",", ":")).encode()
        return header + b"\n" + encode(event)

    def receive(self, slug, payload):
        """Deliver one broker payload to this worker's members of ``slug`` (or to everyone)."""
        channel = self.channels.get(slug)
        if channel is None and slug != EVERYONE:
            return
        header, _, body = payload.partition(b"\n")
        header = json.loads(header)
        frame = encode_frame(body) if body else None  # once, for every recipient
        if slug == EVERYONE:
            for session in list(self.sessions):
                session.send_frame(frame)
            return
        if header["seq"] is None:
            channel.broadcast(frame, header["skip"])
        elif header.get("by_ref"):  # too large for the broker: read it from the database
            channel.read_now(header["seq"])
        else:
            channel.offer(header["seq"], frame, header.get("t"))

    def resync(self):
        """Catch every room up from the database (after the broker may have lost events)."""
        logger.info("catching %s rooms up from the database", len(self.channels))
        for channel in list(self.channels.values()):
            channel.read_now()


def presence_event(slug, joined=(), left=()):
    """Build a ``presence`` event."""
    return {"type": "presence", "room": slug, "joined": list(joined), "left": list(left)}
