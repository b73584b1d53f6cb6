"""The hub never blocks: database waits, password hashing and many sockets share one worker."""
import time
import urllib.error

import gevent
import psycopg2
import pytest

from chat.monitor import REPORT_PREFIX
from tests.live import Browser, connect, receive, receive_type, send

PING_BUDGET = 0.2  # seconds: a ping must be answered this fast while the others wait


class Pinger:
    """Ping over one socket in a loop and keep the round-trip times."""

    def __init__(self, ws, interval=0.05):
        self.ws = ws
        self.interval = interval
        self.rtts = []
        self._greenlet = gevent.spawn(self._run)

    def _run(self):
        count = 0
        while True:
            count += 1
            started = time.perf_counter()
            send(self.ws, type="ping", ref=f"p{count}")
            assert receive(self.ws, timeout=5) == {"type": "pong", "ref": f"p{count}"}
            self.rtts.append(time.perf_counter() - started)
            gevent.sleep(self.interval)

    def stop(self):
        self._greenlet.kill()
        return max(self.rtts), sorted(self.rtts)[len(self.rtts) // 2]


def _sleep_on(ws, seconds, ref):
    send(ws, type="_sleep", seconds=seconds, ref=ref)
    return receive_type(ws, "_slept", timeout=60)


def test_fifty_database_waits_overlap_and_pings_stay_fast(server, make_users, measurements):
    clients = [connect(server, key) for _, key in make_users(51, prefix="sleeper")]
    pinger = Pinger(clients.pop())
    gevent.sleep(0.2)
    started = time.perf_counter()
    jobs = [gevent.spawn(_sleep_on, ws, 0.5, f"s{i}") for i, ws in enumerate(clients)]
    gevent.sleep(0.3)
    page_started = time.perf_counter()
    page = Browser(server).get("/accounts/login/")
    page_seconds = time.perf_counter() - page_started
    gevent.joinall(jobs, timeout=30, raise_error=True)
    elapsed = time.perf_counter() - started
    worst, median = pinger.stop()

    assert all(job.value["ref"] == f"s{i}" for i, job in enumerate(jobs))
    assert page.status == 200
    assert elapsed < 5, f"50 x pg_sleep(0.5) took {elapsed:.2f} s: the ORM is not cooperative"
    assert worst < PING_BUDGET, f"a ping took {worst * 1000:.0f} ms while the queries ran"
    measurements["pg_sleep: 50 x 0.5 s, wall seconds"] = round(elapsed, 2)
    measurements["pg_sleep: ping ms median / worst"] = f"{median * 1000:.1f} / {worst * 1000:.1f}"
    measurements["pg_sleep: login page ms during the queries"] = round(page_seconds * 1000, 1)
    for ws in clients + [pinger.ws]:
        ws.close()


def test_login_storm_hashes_off_the_hub(server, make_users, measurements):
    from django.contrib.auth.hashers import make_password

    password = "storm password 42"
    users = make_users(20, prefix="storm", password=make_password(password))
    [(_, key)] = make_users(1, prefix="stormwatch")
    pinger = Pinger(connect(server, key))
    gevent.sleep(0.2)

    def log_in(username):
        browser = Browser(server)
        for _ in range(30):  # beyond the hashing admission: 503, come back after Retry-After
            try:
                browser.login(username, password)
                return browser.cookie("sessionid")
            except urllib.error.HTTPError as error:
                if error.code != 503:
                    raise
                gevent.sleep(float(error.headers.get("Retry-After", 1)))
        return None

    started = time.perf_counter()
    logins = [gevent.spawn(log_in, username) for username, _ in users]
    gevent.joinall(logins, timeout=90, raise_error=True)
    elapsed = time.perf_counter() - started
    worst, median = pinger.stop()

    assert all(job.value for job in logins), "a login did not set a session cookie"
    ws = connect(server, logins[0].value)
    send(ws, type="whoami")
    assert receive(ws)["user"] == users[0][0]
    assert worst < PING_BUDGET, f"a ping took {worst * 1000:.0f} ms during 20 logins"
    measurements["login storm: 20 logins, wall seconds"] = round(elapsed, 2)
    measurements["login storm: ping ms median / worst"] = f"{median * 1000:.1f} / {worst * 1000:.1f}"
    ws.close()
    pinger.ws.close()


def test_three_hundred_busy_sockets_stay_within_the_connection_cap(
        server, make_users, database_url, measurements):
    keys = [key for _, key in make_users(300, prefix="capped")]
    opening = [gevent.spawn(connect, server, key, timeout=30) for key in keys]
    gevent.joinall(opening, timeout=60, raise_error=True)
    clients = [job.value for job in opening]
    names = [f"chat:{pid}" for pid in server.worker_pids()]
    watcher = psycopg2.connect(database_url)
    watcher.autocommit = True
    counts = []

    def sample():
        with watcher.cursor() as cursor:
            while True:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)",
                               [names])
                counts.append(cursor.fetchone()[0])
                gevent.sleep(0.02)

    sampler = gevent.spawn(sample)
    jobs = [gevent.spawn(_sleep_on, ws, 0.2, f"c{i}") for i, ws in enumerate(clients)]
    gevent.joinall(jobs, timeout=90, raise_error=True)
    sampler.kill()
    watcher.close()

    # Each worker's pool holds CHAT_DB_CONCURRENCY connections; the listener is named apart.
    cap = int(server.env["CHAT_DB_CONCURRENCY"]) * len(names)
    assert len(counts) > 50
    assert max(counts) >= cap - 4, "the test did not load the database at all"
    assert max(counts) <= cap, f"{max(counts)} connections for a cap of {cap}"
    measurements["300 sockets: most PostgreSQL connections seen"] = (
        f"{max(counts)} (cap {cap}: {len(names)} workers x {server.env['CHAT_DB_CONCURRENCY']})")
    for ws in clients:
        ws.close()


@pytest.fixture(scope="module")
def monitored_server(start_server):
    return start_server()


def test_blocking_monitor_reports_a_cpu_loop_with_its_stack(monitored_server, make_users, server):
    [(_, key)] = make_users(1, prefix="spinner")
    ws = connect(monitored_server, key)
    send(ws, type="_spin", seconds=0.3, ref="spin")
    assert receive(ws) == {"type": "_spun", "ref": "spin", "seconds": 0.3}
    deadline = time.monotonic() + 10
    while REPORT_PREFIX not in monitored_server.log():
        assert time.monotonic() < deadline, "no blocking report:\n" + monitored_server.log()
        time.sleep(0.1)
    report = monitored_server.log().split(REPORT_PREFIX, 1)[1]
    assert "in test_spin" in report
    assert REPORT_PREFIX not in server.log()
    ws.close()
