"""Log-in throttling against password guessing: failed attempts only, shared by all workers.

A failure is a row in the database (``LoginFailure``), so every worker and host counts the
same attempts; a per-process dict would give a guesser one allowance per worker. Only
failures count (PROTOCOL.md: many users behind one address can still log in). A username
with ``CHAT_LOGIN_MAX_FAILURES`` failures in the last ``CHAT_LOGIN_WINDOW`` seconds is
refused, even with the right password, until the oldest of them leaves the window; an
address with ``CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS`` failures likewise, whatever the
username. The check runs before the password is hashed, so a throttled guesser costs no
PBKDF2 either.
"""
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from chat.models import LoginFailure

logger = logging.getLogger(__name__)


def client_address(request):
    """Return the address failures are counted against: the TCP peer (a proxy's, behind one)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def is_throttled(username, address):
    """Tell whether log-ins for ``username`` or from ``address`` are refused now."""
    since = timezone.now() - timedelta(seconds=settings.CHAT_LOGIN_WINDOW)
    recent = LoginFailure.objects.filter(at__gte=since)
    if recent.filter(username=_key(username)).count() >= settings.CHAT_LOGIN_MAX_FAILURES:
        return True
    return recent.filter(address=address).count() >= settings.CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS


def record_failure(username, address):
    """Count one failed log-in; forget those that left the window."""
    now = timezone.now()
    LoginFailure.objects.filter(at__lt=now - timedelta(seconds=settings.CHAT_LOGIN_WINDOW)).delete()
    LoginFailure.objects.create(username=_key(username), address=address, at=now)
    logger.info("failed log-in for %r from %s", username[:150], address)


def forget(username):
    """Clear a username's failures after it logged in."""
    LoginFailure.objects.filter(username=_key(username)).delete()


def _key(username):
    return username.casefold()[:150]
