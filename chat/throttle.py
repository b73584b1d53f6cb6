"""Log-in throttling against password guessing, shared by all workers; per-address limits.

A failure is a row in the database (``LoginFailure``), so every worker and host counts the
same attempts; a per-process dict would give a guesser one allowance per worker. Only
failures count (PROTOCOL.md: many users behind one address can still log in). A username
with ``CHAT_LOGIN_MAX_FAILURES`` failures in the last ``CHAT_LOGIN_WINDOW`` seconds is
refused, even with the right password, until the oldest of them leaves the window; an
address with ``CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS`` failures likewise, whatever the
username.

An attempt is reserved before its password is hashed: ``reserve()`` records it as a failure
under a transaction-scoped advisory lock on the username and the address, and a log-in that
succeeds takes it back (``succeeded()``). Counting and recording apart let every one of a
burst of concurrent tries pass the count before the first failure was recorded (issue 12).
The username is the key the log-in form would look up: stripped, NFKC-normalised
(``AbstractBaseUser.normalize_username``), compared case-insensitively, so "  alice " is alice.
"""
import logging
import threading
import time
from collections import deque
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from chat.models import LoginFailure

logger = logging.getLogger(__name__)


def client_address(request):
    """Return the address attempts are counted against (``REMOTE_ADDR``; see chat/proxies.py)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def username_key(username):
    """Return the key of ``username`` as the log-in form would read it."""
    return AbstractBaseUser.normalize_username(str(username).strip()).casefold()[:150]


def reserve(username, address, now=None):
    """Record an attempt as a failure before its hash; return its id, or None if throttled."""
    key = username_key(username)
    now = now or timezone.now()
    since = now - timedelta(seconds=settings.CHAT_LOGIN_WINDOW)
    with transaction.atomic():
        _lock("user:" + key)  # always the username first, then the address: no deadlock
        _lock("address:" + address)
        recent = LoginFailure.objects.filter(at__gte=since)
        if (recent.filter(username=key).count() >= settings.CHAT_LOGIN_MAX_FAILURES
                or recent.filter(address=address).count()
                >= settings.CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS):
            logger.info("log-in for %r from %s throttled", key, address)
            return None
        return LoginFailure.objects.create(username=key, address=address, at=now).pk


def failed(username, address, now=None):
    """Leave the reserved attempt counted; forget those that left the window."""
    now = now or timezone.now()
    LoginFailure.objects.filter(at__lt=now - timedelta(seconds=settings.CHAT_LOGIN_WINDOW)).delete()
    logger.info("failed log-in for %r from %s", username_key(username), address)


def succeeded(username):
    """Clear a username's failures (its reserved attempt with them) after it logged in."""
    LoginFailure.objects.filter(username=username_key(username)).delete()


def _lock(name):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ["chat.throttle:" + name])


class AddressLimit:
    """At most ``limit`` actions per address in a sliding ``window`` of seconds, in this worker.

    For sign-ups and room creation: a per-worker count, so an address gets up to
    ``limit`` times the number of workers; enough to stop a script filling the database.
    """

    PRUNE_ABOVE = 10_000

    def __init__(self, limit, window, clock=time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.times = {}  # address -> deque of monotonic times
        self.lock = threading.Lock()  # a gevent lock under patching; never held across a switch

    def allow(self, address):
        """Count one action for ``address``; tell whether it may go ahead."""
        now = self.clock()
        with self.lock:
            if len(self.times) > self.PRUNE_ABOVE:
                self._prune(now)
            times = self.times.setdefault(address, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.limit:
                return False
            times.append(now)
            return True

    def retry_after(self, address):
        """Seconds until ``address`` may act again (at least 1)."""
        times = self.times.get(address)
        if not times:
            return 1
        return max(1, round(times[0] + self.window - self.clock()))

    def _prune(self, now):
        for address in [a for a, t in self.times.items() if not t or t[-1] <= now - self.window]:
            del self.times[address]


_limits = {}


def address_limit(name):
    """Return this worker's limit ``name`` ("signup" or "room"), made from settings on first use."""
    if name not in _limits:
        prefix = {"signup": "CHAT_SIGNUP", "room": "CHAT_ROOM_CREATE"}[name]
        _limits[name] = AddressLimit(getattr(settings, prefix + "_MAX_PER_ADDRESS"),
                                     getattr(settings, prefix + "_WINDOW"))
    return _limits[name]
