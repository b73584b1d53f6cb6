"""The worker's hub: routes broker payloads to this worker's rooms and sessions, and publishes.

Events travel through the broker to the hub of every worker, this one included. A hub
builds each event's frame once (server frames are unmasked, so the bytes are the same for
every recipient) and hands those bytes to each local member's queue. ``message`` events
carry a seq and go through the room's cursor (chat/cursor.py), which hands them on in seq
order, once, and reads what is missing from the database. Presence is counted by the
worker's tracker (chat/presence.py); control events go to ``on_control``.

A committed message is not lost between workers: a failed publish is retried with backoff
(``retry_delays``), and every few seconds each worker checks, in one query for all its
rooms, that its cursors are not behind ``Room.last_seq`` (``check``).

Each broker payload carries the wall-clock time of its ``publish``. For each ``message``
event a hub observes ``chat_broadcast_latency_seconds`` once, when it has handed the event to
its local sockets' queues (messages read from the database instead are not observed), and
counts the messages queued, once per message with the number of recipients.
"""
import json
import logging
import time
import weakref
from collections import deque

import gevent

from chat.cursor import NEWEST
from chat.errors import EventTooLarge
from chat.hubroom import Room
from chat.presence import PresenceTracker
from chat.protocol import encode
from chat.wsmends import encode_frame

logger = logging.getLogger(__name__)

#: The topic of events for every socket, whatever rooms it joined (announcements).
EVERYONE = "*"
#: The prefix of a user's own topic, ``@<user id>``: events for every session of that user.
USER_PREFIX = "@"
#: The topic of control events (a JSON object each) for ``Hub.on_control`` in every worker.
CONTROL = "!control"
#: Seconds before each new try to publish what the broker refused (then the check reads it).
RETRY_DELAYS = (0.1, 0.5, 1, 2, 5)
#: Failed publishes kept for retrying; more are left to the other workers' cursor checks.
UNSENT_MAX = 1000


class Hub:
    """Room -> local sessions for one worker, fed by the broker.

    ``fetch(room_id, slug, after, upto)``: a room's messages from the database (the cursor's).
    ``last_seqs(room_ids)``: ``{room_id: last_seq}`` in one query (the cursor check).
    ``presence_store``: a ``DatabasePresence``, given to the worker's ``PresenceTracker``
    (``tracker_class``, for tests) with a publish function and ``presence_debounce``.
    ``on_control(event)``: called with each control event (a dict); it must not block.
    ``history_size``: the messages each room keeps in memory for joins (chat/recent.py).
    ``tracker_options``: more keyword arguments for the tracker (its batching).
    """

    def __init__(self, broker, fetch, presence_store, *, gap_wait=0.5, presence_debounce=2.0,
                 last_seqs=None, on_control=None, retry_delays=RETRY_DELAYS, tracker_class=None,
                 history_size=50, tracker_options=None):
        self.broker = broker
        self.fetch = fetch
        self.last_seqs = last_seqs
        self.gap_wait = gap_wait
        self.history_size = history_size
        self.on_control = on_control
        self.user_sessions = lambda user_id: ()  # (user id) -> that user's sessions here
        self.retry_delays = retry_delays
        self.presence_store = presence_store
        self.tracker = (tracker_class or PresenceTracker)(presence_store, self._publish_presence,
                                                          debounce=presence_debounce,
                                                          **(tracker_options or {}))
        self.rooms = {}  # slug -> Room, while this worker has sessions in it
        self.sessions = weakref.WeakSet()  # every open socket of this worker
        self.unsent = deque()  # (topic, payload) the broker refused, oldest first
        self.republisher = None
        broker.start(self.receive, self.resync)

    def attach(self, session, slug):
        """Subscribe ``session`` to ``slug``'s events (before reading the room: none is missed).

        Return the room's cursor, for ``start_at``.
        """
        room = self.rooms.get(slug)
        if room is None:
            room = self.rooms[slug] = Room(slug, self.fetch, self.gap_wait, self.history_size,
                                           getattr(self.tracker, "held", lambda slug, user: False))
            gevent.spawn(self._load_roster, room)  # meanwhile the joiner's arrive is batched
        room.sessions.add(session)
        return room.cursor

    def enter(self, session, slug):
        """Count ``session`` in the room's presence; return the room's roster (chat/roster.py).

        The roster holds the usernames present anywhere, the joiner included, sorted.
        """
        room = self.rooms[slug]
        if session in room.present:
            self.tracker.leave(slug, session)  # joined again: count this socket once
        room.present.add(session)  # before enter: detach calls leave even if enter failed
        self.tracker.enter(slug, session)
        room.roster.load(self._present_reader(slug))  # at once, unless the first read failed
        room.roster.add(session.username)
        return room.roster

    def _present_reader(self, slug):
        if self.presence_store is None:
            return lambda: ()
        return lambda: self.presence_store.present([slug])[slug]

    def _load_roster(self, room):
        try:
            room.roster.load(self._present_reader(room.slug))
        except Exception:
            logger.exception("could not read who is in %s; the next join or heartbeat will",
                             room.slug)

    def refresh_rosters(self):
        """Read again who is in every room held here, in one query: heals what lost events
        left wrong. A roster being read by a join meanwhile is left to that read."""
        rooms = [room for room in list(self.rooms.values())
                 if room.roster.loaded and not room.roster.lock.locked()]
        if not rooms or self.presence_store is None:
            return
        for room in rooms:
            room.roster.begin()
        try:
            found = self.presence_store.present([room.slug for room in rooms])
        except Exception:
            for room in rooms:
                room.roster.pending = None
            logger.exception("could not read who is in %s rooms; the next heartbeat will", len(rooms))
            return
        for room in rooms:
            room.roster.finish(found.get(room.slug, ()))

    def detach(self, session, slug):
        """Unsubscribe ``session``; the tracker ends its presence if it was counted."""
        room = self.rooms.get(slug)
        if room is None:
            return
        room.sessions.discard(session)
        counted = session in room.present
        room.present.discard(session)
        if not room.sessions and self.rooms.get(slug) is room:
            room.cursor.close()
            del self.rooms[slug]
        if counted:
            try:
                self.tracker.leave(slug, session)
            except Exception:  # runs as sockets close: presence heals with the heartbeats
                logger.exception("could not record that %s left %s", session.username, slug)

    def maintain(self, interval):
        """Every ``interval`` seconds: the presence tracker's upkeep (heartbeat, expiry)."""
        while True:
            gevent.sleep(interval)
            try:
                self.tracker.upkeep()
                self.refresh_rosters()
            except Exception:
                logger.exception("presence upkeep failed; trying again in %s s", interval)

    def check(self, interval):
        """Every ``interval`` seconds: catch up every cursor behind ``Room.last_seq``."""
        while True:
            gevent.sleep(interval)
            try:
                self.check_cursors()
            except Exception:
                logger.exception("checking the rooms' cursors failed; trying again in %s s", interval)

    def check_cursors(self):
        """Compare every cursor with its room's ``last_seq`` (one query); return how many lag.

        A lagging cursor waits ``gap_wait`` before it reads: the seq may be on its way.
        """
        cursors = {room.cursor.room_id: room.cursor for room in list(self.rooms.values())
                   if room.cursor.started}
        if not cursors or self.last_seqs is None:
            return 0
        lagging = 0
        for room_id, last_seq in self.last_seqs(list(cursors)).items():
            cursor = cursors.get(room_id)
            if cursor is not None and not cursor.closed and cursor.want(last_seq, now=False):
                lagging += 1
        return lagging

    def publish(self, topic, event, seq=None, skip_user=None):
        """Send ``event`` to the members of room ``topic`` (or EVERYONE, CONTROL, a user's topic)
        in every worker.

        A message (an event with a seq, already committed) reaches this worker's sockets at
        once, not after a round trip through the broker: the sender hears its own message
        sooner, and the broker's echo is dropped by the room's cursor. If the broker fails, a
        message is published again later; an event without seq is delivered here only.
        ``EventTooLarge`` from the broker is raised to the caller.
        """
        payload = self.payload(event, seq, skip_user)
        if seq is not None:
            self.receive(topic, payload)
        try:
            self.broker.publish(topic, payload)
        except EventTooLarge:
            raise
        except Exception as error:
            if seq is None:
                logger.exception("publishing to %s failed; delivering in this worker only", topic)
                self.receive(topic, payload)
                return
            self._publish_later(topic, seq, payload, error)

    def _publish_presence(self, slug, event, skip_user=None):
        self.publish(slug, event, skip_user=skip_user)

    def _publish_later(self, topic, seq, payload, error):
        if len(self.unsent) >= UNSENT_MAX:
            logger.warning("publishing %s#%s failed (%s); %s wait already: left to the cursor checks",
                           topic, seq, error, len(self.unsent))
            return
        self.unsent.append((topic, payload))
        if self.republisher is None:
            logger.warning("publishing %s#%s failed (%s); retrying with backoff", topic, seq, error)
            self.republisher = gevent.spawn(self._republish)

    def _republish(self):
        """Publish what failed, with backoff; then give up (the other workers' checks read it)."""
        try:
            for delay in self.retry_delays:
                gevent.sleep(delay)
                if self._publish_unsent():
                    logger.info("published again what had failed")
                    return
            logger.warning("gave up publishing %s messages again; other workers read them "
                           "from the database", len(self.unsent))
            self.unsent.clear()
        finally:
            self.republisher = None

    def _publish_unsent(self):
        while self.unsent:
            topic, payload = self.unsent[0]
            try:
                self.broker.publish(topic, payload)
            except Exception as error:
                logger.debug("publishing again failed (%s); %s waiting", error, len(self.unsent))
                return False
            self.unsent.popleft()  # the one published: others are only ever appended
        return True

    @staticmethod
    def payload(event, seq=None, skip_user=None):
        """Build a broker payload: a small JSON header line, then the event's JSON."""
        # "t": when it was published (wall clock: hubs may run on other hosts).
        header = json.dumps({"seq": seq, "skip": skip_user, "t": time.time()},
                            separators=(",", ":")).encode()
        return header + b"\n" + encode(event)

    def receive(self, topic, payload):
        """Route one broker payload: to a room here, to every socket, or to ``on_control``.

        Raise ValueError for a payload that cannot be parsed. Never hands a session an empty
        frame: a message without body is read from the database, another event is dropped.
        """
        header, body = parse_payload(payload)
        if topic == CONTROL:
            self._control(body)
            return
        if topic.startswith(USER_PREFIX):
            self._to_user(topic, body)
            return
        room = self.rooms.get(topic)
        if room is None and topic != EVERYONE:
            return
        seq = header.get("seq")
        if seq is not None and topic != EVERYONE:
            if body and not header.get("by_ref"):
                room.cursor.offer(seq, body, header.get("t"))
            else:  # too large for the broker: read it from the database
                room.cursor.want(seq)
            return
        if not body:  # an event without seq sent by reference has nothing to read it from
            logger.warning("dropped an event without body on %s (too large for the broker)", topic)
            return
        frame = encode_frame(body)  # once, for every recipient
        if topic == EVERYONE:
            for session in list(self.sessions):
                session.send_frame(frame)
        else:
            room.note(body, lambda: _object(body, "a room event"))
            room.broadcast(frame, header.get("skip"))

    def _to_user(self, topic, body):
        """Hand an event of a user's own topic to that user's sessions here, whatever rooms."""
        user_id = topic[len(USER_PREFIX):]
        sessions = self.user_sessions(int(user_id)) if user_id.isdigit() else ()
        if body and sessions:
            frame = encode_frame(body)
            for session in list(sessions):
                session.send_frame(frame)

    def _control(self, body):
        event = _object(body, "a control event")
        if event.get("type") == "room" and event.get("room") in self.rooms:
            self.rooms[event["room"]].revoke_access()  # made private or deleted: read it again
        if self.on_control is None:
            logger.debug("no receiver for control event %s", event.get("type"))
            return
        try:
            self.on_control(event)
        except Exception:
            logger.exception("the control event %s failed", event.get("type"))

    def resync(self):
        """Catch every room up from the database (after the broker may have lost events).

        What the rooms remember is forgotten too: a deletion, a presence or a ``room``
        control event may have been among the lost.
        """
        logger.info("catching %s rooms up from the database", len(self.rooms))
        for room in list(self.rooms.values()):
            room.forget()
            room.cursor.want(NEWEST)
        gevent.spawn(self.refresh_rosters)

    def stop(self):
        """Stop the broker and the retries (the worker's hub is being replaced)."""
        self.broker.stop()
        if self.republisher is not None:
            self.republisher.kill(block=False)
        for room in list(self.rooms.values()):
            room.cursor.close()


def _object(body, what):
    event = json.loads(body)
    if not isinstance(event, dict):
        raise ValueError(f"{what} is a JSON object")
    return event


def parse_payload(payload):
    """Split a broker payload into its header (a dict) and body (bytes); raise ValueError."""
    if not isinstance(payload, (bytes, bytearray)):
        raise ValueError(f"a broker payload is bytes, not {type(payload).__name__}")
    line, _, body = bytes(payload).partition(b"\n")
    header = json.loads(line)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(header, dict):
        raise ValueError("a broker payload's header is a JSON object")
    seq, skip, sent = header.get("seq"), header.get("skip"), header.get("t")
    if seq is not None and (type(seq) is not int or seq < 1):
        raise ValueError(f"a broker payload's seq is a positive integer, not {seq!r}")
    if skip is not None and not isinstance(skip, str):
        raise ValueError(f"a broker payload's skip is a username, not {skip!r}")
    if sent is not None and type(sent) not in (int, float):
        raise ValueError(f"a broker payload's t is a time, not {sent!r}")
    return header, body
