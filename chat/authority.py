"""Who may stay connected: this worker's sockets by user and session, and the control events.

A socket is worth what its user's session is worth, for as long as it is. Plain Django code
(chat/revocation.py, ``chat.publish.disconnect``) publishes control events on the hub's
``CONTROL`` topic; every worker's :class:`Authority` applies them to its own sockets:

- ``disconnect`` (a session or a user): close those sockets with 4401 at once;
- ``revalidate`` (a user, optionally re-keying one session): check that user's sessions
  against Django (chat/sessioncheck.py) and close the ones no longer valid with 4401;
- ``room`` (a slug): re-read who may read the room and evict the others from it;
- ``tally`` (a user's socket count on another worker): the cross-worker per-user budget.

Backstops for changes that fire no signal (``QuerySet.update()``, raw SQL): every socket is
revalidated every ``revalidate_interval`` seconds, and each socket's session is checked again
the moment it expires.
"""
import logging
import os
import random
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import gevent

from chat import sessioncheck
from chat.batching import Batches
from chat.db import db_work

logger = logging.getLogger(__name__)

AUTH_CLOSE = 4401
TOO_MANY_SOCKETS = 4429
#: Sockets checked per batch of the periodic revalidation (a few queries each).
CHECK_BATCH = 200
#: Users per ``tally`` event (a few bytes each: well within NOTIFY's 8,000).
TALLY_BATCH = 200


class Authority:
    """This worker's sockets, indexed by user and by session, and what may close them."""

    def __init__(self, per_user, publish, revalidate_interval=60.0, room_readers=None,
                 clock=time.monotonic, wall_clock=time.time, check=sessioncheck.invalid_sessions):
        self.per_user = per_user
        self.publish = publish  # publish(event): a control event to every worker, this one too
        self.revalidate_interval = revalidate_interval
        self.room_readers = room_readers  # (slug) -> None (room gone), or a callable(user_id) -> bool
        self.clock = clock
        self.wall_clock = wall_clock
        self.check = check
        # A tally not re-sent for this long is ignored: its worker died or stopped reporting.
        self.tally_ttl = max(30.0, 2.5 * revalidate_interval)
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.by_user = defaultdict(set)
        self.by_key = defaultdict(set)
        self.remote = defaultdict(dict)  # user_id -> {worker: (sockets, when)}
        self.rooms_of = None  # (slug) -> sessions joined to it here; set by the wiring
        self.tallies = Batches(self._publish_tallies, TALLY_BATCH, name="publishing tallies")
        self.handlers = {"disconnect": self._disconnect, "revalidate": self._revalidate,
                         "room": self._room, "tally": self._tally}

    # -- the registry and the per-user budget ------------------------------------------------

    def admit(self, session):
        """Register ``session``; False (and nothing registered) when its user has too many."""
        here = self.by_user[session.user_id]
        if len(here) + self.elsewhere(session.user_id) >= self.per_user:
            if not here:
                del self.by_user[session.user_id]
            return False
        here.add(session)
        self.by_key[session.session_key].add(session)
        self._report(session.user_id)
        return True

    def discard(self, session):
        """Forget ``session`` (idempotent)."""
        here = self.by_user.get(session.user_id)
        if here is None or session not in here:
            return
        here.discard(session)
        if session.expiry_timer is not None:
            session.expiry_timer.close()  # its callback holds the session
            session.expiry_timer = None
        if not here:
            del self.by_user[session.user_id]
        keyed = self.by_key.get(session.session_key)
        if keyed is not None:
            keyed.discard(session)
            if not keyed:
                del self.by_key[session.session_key]
        self._report(session.user_id, dropped=True)

    def elsewhere(self, user_id):
        """Count ``user_id``'s sockets that other workers reported lately (approximate)."""
        tallies = self.remote.get(user_id)
        if not tallies:
            return 0
        fresh_after = self.wall_clock() - self.tally_ttl
        return sum(count for count, when in tallies.values() if when >= fresh_after)

    def _report(self, user_id, dropped=False):
        # Only users with 2+ sockets here are told about (and the drop back to 1): the common
        # case of one socket per user costs the broker nothing. Off the handshake, and in
        # batches: the users whose counts changed while one tally was published go in the next.
        count = len(self.by_user.get(user_id, ()))
        if count >= 2 or (dropped and count == 1):
            self.tallies.submit(user_id)

    def _publish_tallies(self, user_ids):
        """Publish the current counts of ``user_ids`` here in one ``tally`` event."""
        counts = [[user_id, len(self.by_user.get(user_id, ()))] for user_id in user_ids]
        self._publish({"type": "tally", "worker": self.worker, "at": self.wall_clock(),
                       "counts": [[user_id, n if n >= 2 else 0] for user_id, n in counts]})
        return {}

    def report_all(self):
        """Re-send the tallies of users with several sockets here (they expire elsewhere)."""
        for user_id, sessions in list(self.by_user.items()):
            if len(sessions) >= 2:
                self._report(user_id)

    # -- control events ----------------------------------------------------------------------

    def apply(self, event):
        """Apply one control event from the broker (the hub's ``on_control``)."""
        handler = self.handlers.get(event.get("type"))
        if handler is None:
            logger.warning("ignored a control event of unknown type %r", event.get("type"))
            return
        handler(event)

    def _disconnect(self, event):
        if event.get("session"):
            doomed = list(self.by_key.get(event["session"], ()))
        else:
            doomed = list(self.by_user.get(event.get("user"), ()))
        for session in doomed:
            session.close(AUTH_CLOSE, event.get("reason") or sessioncheck.SIGNED_OUT)
        if doomed:
            logger.info("disconnected %s sockets (%s)", len(doomed), event.get("reason"))

    def _revalidate(self, event):
        user_id = event.get("user")
        rekey = event.get("rekey")
        if rekey:
            self._rekey(user_id, *rekey)
        sessions = list(self.by_user.get(user_id, ()))
        if sessions:
            gevent.spawn(self.revalidate, sessions)

    def _rekey(self, user_id, old, new):
        """Move sockets of ``old`` to ``new``: the session that changed its own password stays."""
        keyed = self.by_key.get(old, set())
        moved = [s for s in keyed if s.user_id == user_id]
        for session in moved:
            keyed.discard(session)
            session.session_key = new
            self.by_key[new].add(session)
        if not keyed:
            self.by_key.pop(old, None)
        if moved:
            logger.info("moved %s sockets to a re-keyed session", len(moved))

    def _room(self, event):
        slug = event.get("room")
        if self.rooms_of is not None and self.rooms_of(slug):
            gevent.spawn(self.recheck_room, slug)

    def _tally(self, event):
        """Note another worker's counts: ``counts`` of ``[user, sockets]``, or one ``user``.

        The single form is what workers before the batched tallies send (a rolling deploy).
        """
        if event.get("worker") == self.worker:
            return
        at = event.get("at", self.wall_clock())
        pairs = event.get("counts") or [[event.get("user"), event.get("sockets", 0)]]
        for user_id, count in pairs:
            self._note_tally(event["worker"], user_id, count, at)

    def _note_tally(self, worker, user_id, count, at):
        tallies = self.remote.get(user_id, {})
        if at < tallies.get(worker, (0, 0))[1]:
            return  # older than what that worker told us last
        if count:
            self.remote[user_id][worker] = (count, at)
        elif tallies:
            tallies.pop(worker, None)
            if not tallies:
                del self.remote[user_id]

    # -- checks against the database ---------------------------------------------------------

    def revalidate(self, sessions):
        """Check ``sessions`` against Django now; close those no longer valid with 4401."""
        sessions = [s for s in sessions if not s.closing]
        try:
            verdicts = self.check({(s.session_key, s.user_id) for s in sessions})
        except Exception:
            logger.exception("could not revalidate %s sockets; the next round will", len(sessions))
            return False
        for session in sessions:
            reason = verdicts.get(session.session_key)
            if reason is not None:
                session.close(AUTH_CLOSE, reason)
        return True

    def recheck_room(self, slug):
        """Evict the sockets joined to ``slug`` whose user may no longer read it."""
        try:
            may_read = self.room_readers(slug)
        except Exception:
            logger.exception("could not re-check who may read %s", slug)
            return
        for session in list(self.rooms_of(slug)):
            if may_read is None or not may_read(session.user_id):
                session.evict(slug, "this room was removed" if may_read is None
                              else "you are no longer a member of this private room")

    def watch_expiry(self, session, expires_at):
        """Check ``session`` again when its Django session expires (``expires_at``: aware datetime)."""
        if session.expiry_timer is not None:
            session.expiry_timer.close()
            session.expiry_timer = None
        if expires_at is None or session.closing:
            return
        delay = max(0.0, expires_at.timestamp() - self.wall_clock()) + 0.05
        timer = gevent.get_hub().loop.timer(delay)
        timer.start(self._expired, session)  # a timer, not a parked greenlet per socket
        session.expiry_timer = timer

    def _expired(self, session):
        if not session.closing:
            gevent.spawn(self._recheck_expired, session)

    def _recheck_expired(self, session):
        if not self.revalidate([session]) or session.closing:
            return
        # Still valid: the session was extended by a later request. Watch its new expiry.
        try:
            with db_work():
                expires_at = sessioncheck.session_expiry(session.session_key)
        except Exception:
            logger.exception("could not read a session's new expiry; the periodic check will")
            return
        if expires_at is not None and expires_at.timestamp() <= self.wall_clock():
            # The database's clock is behind ours: look again in a second, not in a loop.
            expires_at = datetime.fromtimestamp(self.wall_clock() + 1.0, timezone.utc)
        self.watch_expiry(session, expires_at)

    def run_backstop(self):
        """Forever: revalidate every socket once per interval, in batches; re-send tallies."""
        gevent.sleep(random.uniform(0, self.revalidate_interval))  # workers out of step
        while True:
            started = self.clock()
            sessions = [s for group in list(self.by_user.values()) for s in group]
            for first in range(0, len(sessions), CHECK_BATCH):
                self.revalidate(sessions[first:first + CHECK_BATCH])
            self.report_all()
            gevent.sleep(max(1.0, self.revalidate_interval - (self.clock() - started)))

    def _publish(self, event):
        try:
            self.publish(event)
        except Exception:
            logger.exception("could not publish a %s control event", event.get("type"))
