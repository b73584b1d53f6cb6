"""Who opens a socket: the handshakes' session look-ups, batched.

A deploy's reconnect storm brings thousands of handshakes a second, and looking each session
up alone costs three queries (the session, the user, its expiry). Here the handshakes that
arrive while one batch is in the database wait for the next (chat/batching.py), looked up in
two queries for all of them with ``django.contrib.auth.get_user``'s rules
(chat/sessioncheck.py). A lone handshake on an idle worker is looked up at once.
"""
from chat import sessioncheck
from chat.batching import Batches


class SignIns:
    """The worker's session look-ups for handshakes, at most ``batch_max`` keys a batch."""

    def __init__(self, look_up=sessioncheck.signed_in, batch_max=500):
        self.batches = Batches(look_up, batch_max, name="looking sessions up")

    def look_up(self, session_key):
        """Return ``(user, expires_at)`` for the session ``session_key`` signs in, else None.

        Raises what the batch's look-up raised (``ServerBusy`` when no database connection
        frees up in time) to every handshake of the batch. Two tabs of one session share one.
        """
        if not session_key:
            return None
        return self.batches.submit(session_key).get()
