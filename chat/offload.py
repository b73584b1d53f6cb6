"""``offload``: work gevent can't make cooperative, on a few native threads.

Its own module so that chat/metrics.py (which offloads the scrape) and chat/db.py (which
observes metrics) do not import each other.
"""
from django.conf import settings
from gevent.threadpool import ThreadPool

_pool = None


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
