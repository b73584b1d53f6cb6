"""Password hashing off the gevent hub, and admission to it.

PBKDF2 at Django 5.2's 1,000,000 iterations costs about 0.35 s of CPU per check here; on the
hub, ten logins at once would freeze every socket of the worker for seconds.
``hashlib.pbkdf2_hmac`` releases the GIL, so ``chat.offload``'s native threads run it in parallel.

A burst of log-ins used to queue, each holding its request's database connection, behind
the two hashing threads: 140 at once made PostgreSQL refuse connections ("too many
clients") and answer 500 (issue 12). Now a worker admits at most ``CHAT_OFFLOAD_THREADS``
hashing plus ``CHAT_HASH_QUEUE`` waiting (``hashing_slot()``; the rest get a fast 503), and
the hasher closes the request's own connection before it waits for a thread.
"""
import logging
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from gevent.lock import BoundedSemaphore

from chat import db
from chat.offload import offload

logger = logging.getLogger(__name__)

_slots = None


class HashingBusy(Exception):
    """Every hashing slot of this worker is taken: answer 503 with ``Retry-After``."""


class OffloadedPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 hasher, hashing on ``offload``'s threads; stored hashes are unchanged."""

    algorithm = "pbkdf2_sha256"

    def encode(self, password, salt, iterations=None):
        db.release_own_connection()
        return offload(super().encode, password, salt, iterations)


def use_slots(count):
    """Admit ``count`` requests to hashing at once (tests; None means from settings)."""
    global _slots
    _slots = None if count is None else BoundedSemaphore(count)


@contextmanager
def hashing_slot():
    """Hold one of this worker's hashing slots for the block, or raise ``HashingBusy`` now."""
    global _slots
    if _slots is None:
        _slots = BoundedSemaphore(settings.CHAT_OFFLOAD_THREADS + settings.CHAT_HASH_QUEUE)
    if not _slots.acquire(blocking=False):
        logger.warning("hashing slots all taken: a log-in or sign-up refused with 503")
        raise HashingBusy()
    try:
        yield
    finally:
        _slots.release()
