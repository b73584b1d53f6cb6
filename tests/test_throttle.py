"""The log-in throttle's keys and reservations, and the per-address limits (chat/throttle.py)."""
import gevent
import pytest
from django.db import connections

from chat import throttle
from chat.models import LoginFailure


@pytest.mark.parametrize("typed", ["alice", "  alice ", "ALICE", "Alice\t",
                                   "\N{FULLWIDTH LATIN SMALL LETTER A}lice"])
def test_a_username_is_keyed_as_the_log_in_form_reads_it(typed):
    assert throttle.username_key(typed) == "alice"


@pytest.fixture
def committed(django_db_setup, django_db_blocker, settings):
    """Reservations committed by greenlets of their own, removed after."""
    settings.CHAT_LOGIN_MAX_FAILURES = 3
    settings.CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS = 5
    with django_db_blocker.unblock():
        yield
        LoginFailure.objects.filter(address__startswith="192.0.2.").delete()
        connections.close_all()


def reserve_in_own_greenlet(username, address):
    def run():
        try:
            return throttle.reserve(username, address)
        finally:
            connections.close_all()
    return gevent.spawn(run)


def test_concurrent_reservations_never_exceed_the_limit(committed):
    tries = [reserve_in_own_greenlet("erin", "192.0.2.1") for _ in range(10)]
    gevent.joinall(tries, timeout=30, raise_error=True)
    granted = [g.value for g in tries if g.value is not None]
    assert len(granted) == 3
    assert LoginFailure.objects.filter(username="erin").count() == 3


def test_an_address_is_refused_after_its_limit_whatever_the_usernames(committed):
    granted = [throttle.reserve(f"frank{i}", "192.0.2.2") for i in range(7)]
    assert [pk is not None for pk in granted] == [True] * 5 + [False] * 2


def test_a_success_forgets_the_usernames_failures_padded_or_not(committed):
    for _ in range(3):
        assert throttle.reserve(" Gina", "192.0.2.3") is not None
    assert throttle.reserve("gina", "192.0.2.3") is None
    throttle.succeeded("GINA ")
    assert throttle.reserve("gina", "192.0.2.3") is not None


def test_an_address_limit_allows_its_count_in_the_window_then_again_after():
    now = [0.0]
    limit = throttle.AddressLimit(2, 60, clock=lambda: now[0])
    assert [limit.allow("a"), limit.allow("a"), limit.allow("a"), limit.allow("b")] == [
        True, True, False, True]
    now[0] = 30.0
    assert limit.retry_after("a") == 30
    now[0] = 60.0
    assert limit.allow("a")
