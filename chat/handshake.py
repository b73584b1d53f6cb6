"""Who opens a socket: the handshakes' session look-ups, batched and briefly remembered.

A deploy's reconnect storm brings thousands of handshakes a second, and looking each session
up alone costs three queries (the session, the user, its expiry). Here the handshakes that
arrive while one batch is in the database wait for the next (chat/batching.py), looked up in
two queries for all of them with ``django.contrib.auth.get_user``'s rules
(chat/sessioncheck.py). A lone handshake on an idle worker is looked up at once.

A session found signing a user in is remembered for ``ttl`` seconds (the tabs of one browser,
a reconnect), and forgotten at once by the control events that revoke it (``disconnect``,
``revalidate``: chat/authority.py). A look-up during which any such event arrived is done
again: its answer may predate the revocation, and the socket would register after the event
that should have closed it.
"""
import time
from collections import defaultdict
from datetime import datetime, timezone

from chat import sessioncheck
from chat.batching import Batches

#: Remembered sessions beyond which the expired ones are dropped.
PRUNE_ABOVE = 10_000


class SignIns:
    """The worker's session look-ups for handshakes, at most ``batch_max`` keys a batch."""

    def __init__(self, look_up=sessioncheck.signed_in, batch_max=200, ttl=5.0,
                 clock=time.monotonic):
        self.batches = Batches(look_up, batch_max, name="looking sessions up")
        self.ttl = ttl
        self.clock = clock
        self.known = {}  # session key -> (user, expires_at, remembered until)
        self.keys_of = defaultdict(set)  # user id -> their remembered session keys
        self.revocations = 0  # control events that revoked something, ever

    def look_up(self, session_key):
        """Return ``(user, expires_at)`` for the session ``session_key`` signs in, else None.

        Raises what the batch's look-up raised (``ServerBusy`` when no database connection
        frees up in time) to every handshake of the batch. Two tabs of one session share one.
        """
        if not session_key:
            return None
        known = self._known(session_key)
        if known is not None:
            return known
        while True:
            revocations = self.revocations
            found = self.batches.submit(session_key).get()
            if revocations == self.revocations:
                break
        if found is not None and self.ttl > 0:
            self._remember(session_key, *found)
        return found

    def apply(self, event):
        """Forget what a control event revokes (the hub's ``on_control``, with the authority's)."""
        kind = event.get("type")
        if kind == "disconnect" and event.get("session"):
            self._forget_key(event["session"])
        elif kind in ("disconnect", "revalidate"):
            for key in list(self.keys_of.get(event.get("user"), ())):
                self._forget_key(key)
        else:
            return
        self.revocations += 1

    def _known(self, key):
        entry = self.known.get(key)
        if entry is None:
            return None
        user, expires_at, until = entry
        if until <= self.clock() or (expires_at is not None and expires_at <= _now()):
            self._forget_key(key)
            return None
        return user, expires_at

    def _remember(self, key, user, expires_at):
        if len(self.known) >= PRUNE_ABOVE:
            for stale in [k for k, (_, _, until) in self.known.items() if until <= self.clock()]:
                self._forget_key(stale)
        self.known[key] = (user, expires_at, self.clock() + self.ttl)
        self.keys_of[user.pk].add(key)

    def _forget_key(self, key):
        entry = self.known.pop(key, None)
        if entry is None:
            return
        keys = self.keys_of.get(entry[0].pk)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.keys_of[entry[0].pk]


def _now():
    return datetime.now(timezone.utc)
