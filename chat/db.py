"""Database discipline for long-lived sockets, and ``offload`` for work gevent can't make cooperative.

Under gevent a greenlet is a thread to Django, so each socket would keep its own PostgreSQL
connection for as long as it lives (a socket view never finishes, so ``request_finished``
never closes it). Socket code therefore does every unit of ORM work inside ``db_work()``: it
waits for one of a per-worker number of slots (``CHAT_DB_CONCURRENCY``) and closes the
greenlet's connection when done, so a worker never holds more connections than slots.
"""
import logging
from contextlib import contextmanager

from django.conf import settings
from django.db import connections
from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from chat.errors import ServerBusy

logger = logging.getLogger(__name__)

_slots = None
_pool = None


def set_slots(semaphore):
    """Use this semaphore for ``db_work()`` (tests inject one; None means from settings)."""
    global _slots
    _slots = semaphore


def slots():
    """Return the worker's semaphore, created from ``CHAT_DB_CONCURRENCY`` on first use."""
    global _slots
    if _slots is None:
        _slots = BoundedSemaphore(settings.CHAT_DB_CONCURRENCY)
    return _slots


@contextmanager
def db_work():
    """Hold a database slot for one unit of work and close this greenlet's connection after.

    Raises ``ServerBusy`` when no slot frees up within ``CHAT_DB_WAIT_TIMEOUT`` seconds.
    """
    semaphore = slots()
    if not semaphore.acquire(timeout=settings.CHAT_DB_WAIT_TIMEOUT):
        logger.warning("no database slot within %s s", settings.CHAT_DB_WAIT_TIMEOUT)
        raise ServerBusy("the database is busy; try again")
    try:
        yield
    finally:
        try:
            connections.close_all()
        finally:
            semaphore.release()


def offload(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on a native thread and wait cooperatively.

    For CPU-bound work that releases the GIL (hashlib, zlib, most C extensions) or calls
    that can't be patched. Never touch the ORM in ``fn``: Django's connections are per
    greenlet, and the pool's threads are not greenlets of this hub.
    """
    return offload_pool().apply(fn, args, kwargs)


def offload_pool():
    """Return the worker's pool of ``CHAT_OFFLOAD_THREADS`` threads, created on first use.

    Its own pool, not the hub's: DNS look-ups use the hub's threadpool and must not queue
    behind password hashes; and a few threads leave the hub a fair share of the CPU, where
    ten busy hashing threads made pings wait over 100 ms.
    """
    global _pool
    if _pool is None:
        _pool = ThreadPool(settings.CHAT_OFFLOAD_THREADS)
    return _pool
