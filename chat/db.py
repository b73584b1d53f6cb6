"""Database discipline for long-lived sockets (``offload``, for CPU work, is in chat/offload.py).

Under gevent a greenlet is a thread to Django, so each socket would keep its own PostgreSQL
connection for as long as it lives (a socket view never finishes, so ``request_finished``
never closes it). Socket code therefore does every unit of ORM work inside ``db_work()``,
which lends the greenlet one of a per-worker pool of ``CHAT_DB_CONCURRENCY`` Django
connections and takes it back after: a worker never holds more connections than that, and
a unit of work does not pay for a new connection (about 4 ms here, a third of a send).
"""
import logging
import time
from contextlib import contextmanager

import gevent
import psycopg2.extensions
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from gevent.queue import Empty, LifoQueue

from chat import metrics
from chat.errors import ServerBusy

logger = logging.getLogger(__name__)

_connections = None


class ConnectionPool:
    """A fixed number of Django database connections, lent to one greenlet at a time.

    Each is a ``DatabaseWrapper`` marked for thread sharing (as Django's live-server tests
    do), connected on first use and kept open. Each one handed back is checked: one that is
    closed, broken, or left mid-query or mid-transaction is closed and replaced by a new one.
    """

    def __init__(self, size, alias=DEFAULT_DB_ALIAS):
        self.size = size
        self.alias = alias
        self.idle = LifoQueue()  # last in, first out: the warmest connection goes next
        self.lent = {}  # greenlet -> wrapper
        for _ in range(size):
            self.idle.put(None)  # created on first use

    @contextmanager
    def lend(self, timeout):
        """Install a connection as this greenlet's ``connections[alias]`` for the block.

        Reentrant: a nested block in the same greenlet keeps the connection it has (taking a
        second one could wait forever on a pool of one).
        """
        borrower = gevent.getcurrent()
        if borrower in self.lent:
            yield self.lent[borrower]
            return
        started = time.perf_counter()
        try:
            wrapper = self.idle.get(timeout=timeout)
        except Empty:
            logger.warning("no database connection free within %s s", timeout)
            raise ServerBusy("the database is busy; try again") from None
        finally:
            metrics.DB_WAIT.observe(time.perf_counter() - started)
        if wrapper is None:
            wrapper = connections.create_connection(self.alias)
            wrapper.inc_thread_sharing()
        # The greenlet's own wrapper, put back after. Read without creating one: every greenlet
        # is a "thread" to Django, and a wrapper made for each socket would cost 3 KiB each.
        own = getattr(connections._connections, self.alias, None)
        connections[self.alias] = wrapper
        self.lent[borrower] = wrapper
        try:
            yield wrapper
        finally:
            del self.lent[borrower]
            if own is None:
                del connections[self.alias]
            else:
                connections[self.alias] = own
            self._give_back(wrapper)

    def _give_back(self, wrapper):
        """Put ``wrapper`` back, or an empty slot in its place (a new connection on next use)."""
        keep = False
        # Closed after a database error: the server ended it (a restart, a failover), and
        # likely every idle one too. Those are closed now rather than failing a user's work each.
        lost = wrapper.errors_occurred and wrapper.connection is not None and wrapper.connection.closed
        try:
            keep = self._reusable(wrapper)
        finally:  # even when killed during the check: the pool never loses a slot
            if not keep:
                self._discard(wrapper)
                wrapper = None
            self.idle.put(wrapper)
        if lost:
            idle = self.close()
            if idle:
                logger.warning("the database closed a pooled connection: %s idle ones closed too "
                               "(each reconnects on its next use)", idle)

    def _reusable(self, wrapper):
        """Tell whether the next borrower may have ``wrapper`` as it is.

        A greenlet killed mid-query (``gevent.kill``, ``gevent.Timeout``) raises out of
        psycopg2's wait callback, and psycopg2 then closes the connection; Django sees no
        database error, so ``errors_occurred`` stays False and the next borrower would get
        "connection already closed" (issue 13). The checks below read libpq's state, no round
        trip; only a connection that saw an error pays for ``is_usable()``'s ``SELECT 1``.
        """
        raw = wrapper.connection
        if raw is None:
            return True  # not connected: connects on its next use
        if wrapper.in_atomic_block:
            problem = "a transaction left open"
        elif raw.closed:
            problem = "closed"
        elif raw.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            problem = "a query or transaction unfinished"
        elif wrapper.errors_occurred and not wrapper.is_usable():
            problem = "broken"
        else:
            wrapper.errors_occurred = False
            return True
        logger.warning("replacing a pooled database connection: %s", problem)
        return False

    @staticmethod
    def _discard(wrapper):
        try:
            wrapper.close()
        except Exception as error:  # it is dropped anyway
            logger.info("closing a discarded database connection failed: %s", error)

    def close(self):
        """Close the connections that are idle now; return how many were open."""
        idle = [self.idle.get_nowait() for _ in range(self.idle.qsize())]
        closed = 0
        for wrapper in idle:
            if wrapper is not None:
                self._discard(wrapper)
                closed += 1
            self.idle.put(None)
        return closed


def use_connections(pool):
    """Use this pool for ``db_work()`` (tests inject one; None means from settings)."""
    global _connections
    _connections = pool


def connection_pool():
    """Return the worker's pool, of ``CHAT_DB_CONCURRENCY`` connections, built on first use."""
    global _connections
    if _connections is None:
        _connections = ConnectionPool(settings.CHAT_DB_CONCURRENCY)
    return _connections


@contextmanager
def db_work():
    """Do one unit of ORM work on a pooled connection.

    Raises ``ServerBusy`` when none frees up within ``CHAT_DB_WAIT_TIMEOUT`` seconds.
    """
    with connection_pool().lend(settings.CHAT_DB_WAIT_TIMEOUT):
        yield



def release_own_connection():
    """Close this greenlet's own Django connection before a long wait, if that is safe.

    A request greenlet keeps its connection until the response is done; one waiting 0.35 s or
    more for a hashing thread would hold it for nothing (issue 12: "too many clients"). Kept
    inside a transaction, or when lent by the pool; it reconnects on next use (about 4 ms).
    """
    own = getattr(connections._connections, DEFAULT_DB_ALIAS, None)
    if own is None or own.connection is None or own.in_atomic_block:
        return
    if _connections is not None and gevent.getcurrent() in _connections.lent:
        return
    own.close()
