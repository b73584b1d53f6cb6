"""db_work() bounds and closes connections; offload() and the hasher keep the hub free."""
import threading
import time

import gevent
import pytest
from django.contrib.auth.hashers import check_password, make_password
from django.db import connection
from gevent.lock import BoundedSemaphore

from chat import db
from chat.errors import ServerBusy


@pytest.fixture
def two_slots():
    db.set_slots(BoundedSemaphore(2))
    yield
    db.set_slots(None)


@pytest.mark.django_db
def test_db_work_closes_the_connection_after(two_slots):
    with db.db_work():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert not connection.connection.closed
    # Inside the test's transaction Django keeps the closed handle; elsewhere it drops it.
    assert connection.connection is None or connection.connection.closed


@pytest.mark.django_db
def test_db_work_admits_no_more_than_its_slots(two_slots):
    inside = []
    most = []

    def work():
        with db.db_work():
            inside.append(1)
            most.append(len(inside))
            gevent.sleep(0.05)
            inside.pop()

    gevent.joinall([gevent.spawn(work) for _ in range(8)], timeout=10, raise_error=True)
    assert max(most) == 2


def test_db_work_gives_up_with_server_busy(two_slots, settings):
    settings.CHAT_DB_WAIT_TIMEOUT = 0.05
    semaphore = db.slots()
    semaphore.acquire()
    semaphore.acquire()
    try:
        with pytest.raises(ServerBusy, match="the database is busy; try again"):
            with db.db_work():
                pass
    finally:
        semaphore.release()
        semaphore.release()


def test_offload_runs_in_another_thread_while_the_hub_runs():
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])
    caller = threading.get_ident()
    ran_in = db.offload(lambda: (time.sleep(0.3), threading.get_ident())[1])
    ticker.kill()
    assert ran_in != caller
    assert len(ticks) >= 10, "the hub stood still while the offloaded call ran"


def test_password_checks_leave_the_hub_free():
    encoded = make_password("a long enough password")
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(10000)])
    started = time.perf_counter()
    assert check_password("a long enough password", encoded)
    assert not check_password("wrong", encoded)
    elapsed = time.perf_counter() - started
    ticker.kill()
    # The hub ticked through the hashing: at least half the ticks a free hub would make.
    assert len(ticks) >= elapsed / 0.01 / 2, (len(ticks), elapsed)
