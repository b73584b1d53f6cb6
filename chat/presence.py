"""Who is in which room, across every worker and host, kept in PostgreSQL.

Each worker counts its own sockets (``PresenceTracker``) and writes a row per (room, user)
it holds (``DatabasePresence``); a user is present while any worker holds a live row for
them. Every ``CHAT_PRESENCE_HEARTBEAT`` seconds a worker re-asserts all it holds (an upsert,
so rows lost meanwhile come back); rows not refreshed for ``CHAT_PRESENCE_TTL`` (a worker
that died without leaving) are expired by whichever worker looks first. Every timestamp is
the database's ``now()``: hosts whose clocks disagree must not expire each other's users.
"""
import logging
import os
import secrets
import socket
from contextlib import contextmanager

import gevent
from django.db import connection, transaction
from gevent.event import Event
from gevent.lock import Semaphore

from chat.batching import Batches
from chat.db import db_work
from chat.models import Presence

logger = logging.getLogger(__name__)

HEARTBEAT_BATCH = 5000  # (room, user) pairs per upsert statement

_worker = None  # (pid, id): the id is made again in a forked child


def worker_id():
    """Name this worker process: host and pid for the logs, and a random part.

    ``host:pid`` alone collides between containers (each one's first worker is often pid 7
    on a host named after the image), and two workers sharing an id delete each other's rows.
    """
    global _worker
    if _worker is None or _worker[0] != os.getpid():
        _worker = (os.getpid(), f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(8)}")
        logger.info("presence worker id %s", _worker[1])
    return _worker[1]


def presence_event(slug, joined=(), left=()):
    """Build a ``presence`` event."""
    return {"type": "presence", "room": slug, "joined": list(joined), "left": list(left)}


TABLE = Presence._meta.db_table
LIVE = "seen >= now() - make_interval(secs => %(ttl)s)"

# Arrivals in a batch, sorted so that two workers' batches take their row locks in one order.
ARRIVE = f"""
    WITH held AS (
        SELECT DISTINCT room, username
        FROM unnest(%(rooms)s::varchar[], %(users)s::varchar[]) AS held(room, username)
    ), arrived AS (
        INSERT INTO {TABLE} (room, username, worker, seen)
        SELECT room, username, %(worker)s, now() FROM held ORDER BY room, username
        ON CONFLICT (room, username, worker) DO UPDATE SET seen = EXCLUDED.seen
    )
    SELECT h.room, h.username, NOT EXISTS (
        SELECT 1 FROM {TABLE} p WHERE p.room = h.room AND p.username = h.username
        AND p.worker <> %(worker)s AND p.{LIVE}) FROM held h"""

DEPART = f"""
    WITH departed AS (
        DELETE FROM {TABLE} WHERE room = %(room)s AND username = %(user)s AND worker = %(worker)s
    )
    SELECT NOT EXISTS (SELECT 1 FROM {TABLE} WHERE room = %(room)s AND username = %(user)s
                       AND worker <> %(worker)s AND {LIVE})"""

# xmax = 0 marks a row this statement inserted rather than updated: a row lost meanwhile.
HEARTBEAT = f"""
    WITH asserted AS (
        INSERT INTO {TABLE} (room, username, worker, seen)
        SELECT room, username, %(worker)s, now()
        FROM unnest(%(rooms)s::varchar[], %(users)s::varchar[]) AS held(room, username)
        ON CONFLICT (room, username, worker) DO UPDATE SET seen = EXCLUDED.seen
        RETURNING room, username, xmax = 0 AS inserted
    )
    SELECT room, username FROM asserted a WHERE inserted AND NOT EXISTS (
        SELECT 1 FROM {TABLE} p WHERE p.room = a.room AND p.username = a.username
        AND p.worker <> %(worker)s AND p.{LIVE})"""

# Arrive and depart of one (room, user) take turns across workers: each statement sees one
# snapshot, so two workers' departs running at once each saw the other's row, and neither
# announced "left" (a user closing tabs on two workers stayed present for good).
LOCK_PAIR = "SELECT pg_advisory_xact_lock(hashtextextended(%(room)s || chr(10) || %(user)s, 0))"
# A batch takes its pairs' locks in the order of their keys: two batches never deadlock.
LOCK_PAIRS = """
    SELECT count(*) FROM (
        SELECT pg_advisory_xact_lock(k) FROM (
            SELECT DISTINCT hashtextextended(room || chr(10) || username, 0) AS k
            FROM unnest(%(rooms)s::varchar[], %(users)s::varchar[]) AS held(room, username)
            ORDER BY k OFFSET 0
        ) keys
    ) locked"""

PRESENT = f"""
    SELECT room, username FROM {TABLE}
    WHERE room = ANY(%(rooms)s::varchar[]) AND {LIVE} GROUP BY room, username"""

EXPIRE = f"""
    WITH expired AS (
        DELETE FROM {TABLE} WHERE seen < now() - make_interval(secs => %(ttl)s)
        RETURNING room, username
    )
    SELECT DISTINCT room, username FROM expired e WHERE NOT EXISTS (
        SELECT 1 FROM {TABLE} p WHERE p.room = e.room AND p.username = e.username AND p.{LIVE})
    ORDER BY room, username"""


class DatabasePresence:
    """Global presence in the ``chat_presence`` table, one statement per call."""

    def __init__(self, ttl, worker=None):
        self.ttl = ttl
        self.worker = worker  # None: this process's worker_id() (tests name two workers)

    def _run(self, sql, **params):
        with db_work(), connection.cursor() as cursor:
            cursor.execute(sql, {"worker": self.worker or worker_id(), "ttl": self.ttl, **params})
            return cursor.fetchall()

    def _run_for_pair(self, sql, **params):
        """Run ``sql`` after taking the (room, user) lock: its snapshot sees the other turns."""
        with db_work(), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(LOCK_PAIR, params)
            cursor.execute(sql, {"worker": self.worker or worker_id(), "ttl": self.ttl, **params})
            return cursor.fetchall()

    def arrive(self, pairs):
        """Record each (room, username) of ``pairs`` here, in one statement.

        Return, for each pair in order, whether it is the user's first presence anywhere
        (no other worker holds them in that room).
        """
        rooms, users = [room for room, _ in pairs], [user for _, user in pairs]
        with db_work(), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(LOCK_PAIRS, {"rooms": rooms, "users": users})
            cursor.execute(ARRIVE, {"worker": self.worker or worker_id(), "ttl": self.ttl,
                                    "rooms": rooms, "users": users})
            first = {(room, user): alone for room, user, alone in cursor.fetchall()}
        return [first[pair] for pair in pairs]

    def present(self, rooms):
        """Return ``{room: set of usernames}`` present anywhere in ``rooms`` (one query)."""
        found = {room: set() for room in rooms}
        for room, user in self._run(PRESENT, rooms=list(rooms)):
            found[room].add(user)
        return found

    def depart(self, room, username):
        """Forget ``username`` in ``room`` here; return whether they are gone everywhere."""
        [(gone,)] = self._run_for_pair(DEPART, room=room, user=username)
        return gone

    def heartbeat(self, held):
        """Re-assert this worker's (room, username) pairs ``held``.

        Return the pairs whose rows were missing (deleted during an outage longer than the
        TTL) and that no other worker holds: other workers may have announced them gone.
        """
        held = list(held)
        if not held:
            return []
        back = []
        with db_work():
            for start in range(0, len(held), HEARTBEAT_BATCH):
                batch = held[start:start + HEARTBEAT_BATCH]
                back += self._run(HEARTBEAT, rooms=[room for room, _ in batch],
                                  users=[user for _, user in batch])
        if back:
            logger.info("presence re-asserted %s users whose rows were lost", len(back))
        return sorted(back)

    def expire(self):
        """Delete rows of workers that stopped refreshing; return (room, username) now gone."""
        gone = self._run(EXPIRE)
        if gone:
            logger.info("presence expired for %s users of workers that stopped", len(gone))
        return gone


class PresenceTracker:
    """This worker's sockets per (room, user), told to the store and announced to the rooms.

    A user's last socket leaving schedules the depart after ``debounce`` seconds, and a
    socket of theirs entering before then cancels it: a user toggling join/leave costs the
    room's members no events. Store calls for one (room, user) run one at a time, so a
    depart never overtakes the arrive before it (or the reverse) in the database, and their
    announcements go out in the same order. A depart also waits for a heartbeat in flight
    that re-asserts its pair, whose upsert would otherwise bring the row back.

    Arrivals go to the store in batches (chat/batching.py: those that came while the last
    batch was written, at most ``batch_max`` pairs each). A user already held here (another tab, or a depart cancelled
    before it ran) writes nothing: the row is there, and the heartbeat re-asserts it.
    """

    def __init__(self, store, publish, debounce=2.0, spawn_later=gevent.spawn_later,
                 batch_max=500):
        self.store = store
        self.arrivals = Batches(lambda pairs: dict(zip(pairs, store.arrive(pairs))), batch_max,
                                name="recording arrivals")
        self.publish = publish  # (slug, event, skip_user=None), Hub.publish
        self.debounce = debounce
        self.spawn_later = spawn_later
        self.sockets = {}  # (slug, username) -> sessions counted here
        self.leaving = {}  # (slug, username) -> the timer of its depart
        self.retry = set()  # pairs whose depart failed: upkeep retries them
        self.locks = {}  # (slug, username) -> [Semaphore, holders and waiters]
        self.beating = None  # (pairs, Event) while a heartbeat is in flight
        self.beats = 0  # upkeeps in a row that succeeded
        self.failing = False

    def enter(self, slug, session):
        """Count ``session`` in ``slug``: record the user's arrival and announce it if first."""
        user = session.username
        key = (slug, user)
        counted = self.sockets.setdefault(key, set())
        arriving = not counted and not self._cancel(key)  # a cancelled depart: still announced
        counted.add(session)
        try:
            with self._serial(key):  # held already: still after the arrive in flight
                if arriving and self.arrivals.submit(key).get():
                    self.publish(slug, presence_event(slug, joined=[user]), skip_user=user)
        except BaseException:
            self.leave(slug, session)  # nothing half-counted; its row goes after the debounce
            raise

    def held(self, slug, user):
        """Tell whether this worker holds ``user`` in ``slug`` (a depart not yet due included)."""
        return self._held((slug, user))

    def leave(self, slug, session):
        """Uncount ``session``; the user's last socket here schedules their depart."""
        key = (slug, session.username)
        counted = self.sockets.get(key)
        if not counted or session not in counted:
            return
        counted.discard(session)
        if not counted:
            del self.sockets[key]
            self.leaving[key] = self.spawn_later(self.debounce, self._depart_later, key)

    def holds(self):
        """Return the (slug, username) pairs this worker holds (departs not yet due included)."""
        return set(self.sockets) | set(self.leaving)

    def upkeep(self):
        """Re-assert what this worker holds, retry failed departs, expire dead workers' rows.

        Expiry waits for a second upkeep in a row that succeeds: after an outage every worker
        needs one heartbeat to re-assert its rows, and expiring earlier would announce live
        users of slower workers gone.
        """
        try:
            self._heartbeat()
            for key in sorted(self.retry):
                self._depart(key)
            self.beats += 1
            if self.beats >= 2:
                for slug, user in self.store.expire():
                    if not self._held((slug, user)):
                        self.publish(slug, presence_event(slug, left=[user]))
        except Exception as error:
            self.beats = 0
            if not self.failing:
                logger.warning("presence upkeep failed, retrying every heartbeat: %s", error)
            self.failing = True
            return
        if self.failing:
            logger.info("presence upkeep works again")
        self.failing = False

    def flush(self):
        """Run every depart not yet due now (a stopping worker)."""
        for key in list(self.leaving):
            self.leaving.pop(key).kill(block=False)
            self._depart(key)

    def _heartbeat(self):
        held = self.holds()
        done = Event()
        self.beating = (held, done)
        try:
            for slug, user in self.store.heartbeat(sorted(held)):
                if self._held((slug, user)):  # announced gone by another worker's expiry
                    self.publish(slug, presence_event(slug, joined=[user]))
        finally:
            self.beating = None
            done.set()

    def _held(self, key):
        return key in self.sockets or key in self.leaving

    def _cancel(self, key):
        timer = self.leaving.pop(key, None)
        if timer is None:
            return False
        timer.kill(block=False)
        return True

    def _depart_later(self, key):
        self.leaving.pop(key, None)
        self._depart(key)

    def _depart(self, key):
        """Tell the store that the user left; announce it if they are gone everywhere."""
        beat = self.beating
        if beat is not None and key in beat[0]:
            beat[1].wait()
        with self._serial(key):
            self.retry.discard(key)
            if self._held(key):  # came back meanwhile
                return
            slug, user = key
            try:
                gone = self.store.depart(slug, user)
            except Exception as error:
                logger.warning("could not record that %s left %s (retrying at the next heartbeat): %s",
                               user, slug, error)
                self.retry.add(key)
                return
            if gone:
                self.publish(slug, presence_event(slug, left=[user]))

    @contextmanager
    def _serial(self, key):
        """Hold ``key``'s lock: one store call at a time per (room, user)."""
        entry = self.locks.get(key)
        if entry is None:
            entry = self.locks[key] = [Semaphore(), 0]
        entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self.locks[key]
