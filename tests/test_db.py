"""db_work() lends pooled connections and bounds them; offload() and the hasher keep the hub free."""
import threading
import time

import gevent
import gevent.event
import psycopg2
import pytest
from django.contrib.auth.hashers import check_password, make_password
from django.db import DatabaseError, connection, connections

from chat import db, offload
from chat.errors import ServerBusy


@pytest.fixture
def two_slots(pooled_db):
    return pooled_db


def backend_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_db_work_reuses_a_pooled_connection(two_slots):
    with db.db_work():
        first = backend_pid()
    with db.db_work():
        assert backend_pid() == first  # no new connection per unit of work


def test_db_work_gives_the_greenlet_its_own_connection_back_after(two_slots):
    own = connections["default"]
    with db.db_work():
        lent = connections["default"]
        assert lent is not own
    assert connections["default"] is own


def test_a_failed_query_keeps_a_usable_connection(two_slots):
    with db.db_work():
        first = backend_pid()
    with pytest.raises(DatabaseError):
        with db.db_work():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1/0")
    with db.db_work():
        assert backend_pid() == first


def test_a_killed_connection_is_replaced(two_slots):
    def terminate(pid):
        with db.db_work():  # the pool's other connection
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    with db.db_work():
        doomed = backend_pid()
        gevent.spawn(terminate, doomed).get(timeout=10)
    pids = []
    for _ in range(3):
        try:
            with db.db_work():
                pids.append(backend_pid())
        except DatabaseError:
            pids.append("failed")  # the first use of the dead connection fails once
    assert pids[-1] not in ("failed", doomed)


def test_a_connection_the_server_ended_closes_the_idle_ones_too(two_slots, caplog):
    """After a restart every pooled connection is dead: one failure, not one per connection."""
    caplog.set_level("WARNING", logger="chat.db")
    held = gevent.event.Event()
    done = gevent.event.Event()

    def hold_second():
        with db.db_work():
            pids.append(backend_pid())
            held.set()
            done.wait(10)

    pids = []
    with db.db_work():
        pids.append(backend_pid())
        holder = gevent.spawn(hold_second)
        assert held.wait(10)
    done.set()
    holder.join(10)  # both connections open and idle now
    outside = psycopg2.connect(**connection.get_connection_params())  # not one of the pool's
    with outside, outside.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
    outside.close()
    with pytest.raises(DatabaseError):  # as after a restart: the server ended both
        with db.db_work():
            backend_pid()
    with db.db_work():
        assert backend_pid() not in pids  # not the other dead one: it was closed at once
    assert [r.getMessage() for r in caplog.records if "idle ones" in r.getMessage()] == [
        "the database closed a pooled connection: 1 idle ones closed too (each reconnects on its "
        "next use)"]


def slow_query_on_a_pooled_connection(started):
    """Borrow a pooled connection and run a query that outlives the test's patience."""
    with db.db_work():
        started.append(backend_pid())
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(30)")


def assert_the_next_borrowers_get_working_connections(pool, interrupted_pid):
    try:
        for _ in range(3):  # every slot, the one handed back first (LIFO) included
            with db.db_work():
                assert backend_pid() != interrupted_pid
        assert pool.idle.qsize() == pool.size  # the pool kept every slot
    finally:  # the server runs the sleep on after the client left: end it for the teardown
        with db.db_work(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [interrupted_pid])


def test_a_greenlet_killed_mid_query_hands_back_no_dead_connection(two_slots):
    started = []
    worker = gevent.spawn(slow_query_on_a_pooled_connection, started)
    gevent.sleep(0.3)
    assert len(started) == 1, "the query did not start"
    worker.kill(timeout=10)
    assert worker.dead
    assert_the_next_borrowers_get_working_connections(two_slots, started[0])


def test_a_query_interrupted_by_a_timeout_hands_back_no_dead_connection(two_slots):
    started = []
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.3):
            slow_query_on_a_pooled_connection(started)
    assert_the_next_borrowers_get_working_connections(two_slots, started[0])


def test_a_transaction_left_open_is_replaced(two_slots):
    with db.db_work():
        doomed = backend_pid()
        connection.set_autocommit(False)  # a unit of work that forgot to finish its transaction
        backend_pid()
    with db.db_work():
        assert backend_pid() != doomed
        assert connection.get_autocommit()


def test_db_work_admits_no_more_than_its_connections(two_slots):
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

    def hold():
        with db.db_work():
            gevent.sleep(1)

    holders = [gevent.spawn(hold), gevent.spawn(hold)]
    gevent.sleep(0.1)
    with pytest.raises(ServerBusy, match="the database is busy; try again"):
        with db.db_work():
            pass
    gevent.joinall(holders, timeout=5)


def test_nested_db_work_keeps_its_connection(two_slots):
    with db.db_work():
        outer = backend_pid()
        with db.db_work():
            assert backend_pid() == outer
        assert backend_pid() == outer


def test_offload_runs_in_another_thread_while_the_hub_runs():
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])
    caller = threading.get_ident()
    ran_in = offload.offload(lambda: (time.sleep(0.3), threading.get_ident())[1])
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


def test_hashing_releases_the_requests_own_connection_but_not_a_lent_one(pooled_db):
    def run():
        try:
            own_pid = backend_pid()  # this greenlet's own connection, as a request's
            make_password("a long enough password")
            assert connection.connection is None, "hashing kept the request's connection"
            assert backend_pid() != own_pid  # it reconnects on next use
            with db.db_work():
                lent_pid = backend_pid()
                make_password("a long enough password")
                assert backend_pid() == lent_pid  # a lent connection stays with its borrower
        finally:
            connections.close_all()
    gevent.spawn(run).get(timeout=30)


def test_hashing_keeps_the_connection_of_an_open_transaction(pooled_db):
    from django.db import transaction

    def run():
        try:
            with transaction.atomic():
                pid = backend_pid()
                make_password("a long enough password")
                assert backend_pid() == pid
        finally:
            connections.close_all()
    gevent.spawn(run).get(timeout=30)


def test_hashing_slots_beyond_the_bound_are_refused_at_once():
    from chat import hashers

    hashers.use_slots(2)
    try:
        with hashers.hashing_slot(), hashers.hashing_slot():
            started = time.perf_counter()
            with pytest.raises(hashers.HashingBusy), hashers.hashing_slot():
                pass
            assert time.perf_counter() - started < 0.05
        with hashers.hashing_slot():  # released slots are free again
            pass
    finally:
        hashers.use_slots(None)


def test_every_connection_has_the_statement_timeout(pooled_db):
    with db.db_work(), connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "30s"
