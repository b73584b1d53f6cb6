"""Log-in and sign-up against a real gunicorn: bursts, the throttle's paths, per-address limits."""
import http.client
import re
import statistics
import time
import urllib.parse
from collections import Counter

import gevent
import gevent.event
import psycopg2
import pytest

from chat.accounts import BUSY, SIGNUP_LIMITED
from chat.views import ROOMS_LIMITED
from tests.live import Browser

PASSWORD = "correct horse 9"
THROTTLED = "Too many failed log-in attempts. Wait 5 minutes and try again."
WRONG = "Please enter a correct username and password"
BURST = 140
MARGIN = 10  # connections pg_stat_activity must stay below max_connections by


@pytest.fixture(autouse=True)
def forget_failures(django_db_setup, django_db_blocker):
    """Clear the failures a test left: other modules' servers count 127.0.0.1's too."""
    yield
    from chat.models import LoginFailure

    with django_db_blocker.unblock():
        LoginFailure.objects.all().delete()


@pytest.fixture(scope="module")
def password_hash():
    from django.contrib.auth.hashers import make_password

    return make_password(PASSWORD)


class Poster:
    """Raw form POSTs sharing one CSRF cookie and token, so many can go at once."""

    def __init__(self, server, path="/accounts/login/"):
        self.server = server
        self.path = path
        browser = Browser(server)
        page = browser.get(path).read().decode()
        self.token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        self.cookie = f"csrftoken={browser.cookie('csrftoken')}"

    def post(self, fields, path=None, timeout=60):
        """POST ``fields``; return (status, headers, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        try:
            body = urllib.parse.urlencode({"csrfmiddlewaretoken": self.token, **fields})
            connection.request("POST", path or self.path, body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie,
                "Referer": self.server.url + (path or self.path)})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            connection.close()


def get_page(server, path, session_key, timeout=30):
    """GET ``path`` as the user of ``session_key``; return (status, seconds)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Cookie": f"sessionid={session_key}"})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


def all_at_once(calls, timeout=90):
    """Run the zero-argument ``calls`` concurrently; return their results in order."""
    greenlets = [gevent.spawn(call) for call in calls]
    gevent.joinall(greenlets, timeout=timeout, raise_error=True)
    assert all(g.ready() for g in greenlets), "requests still running after the timeout"
    return [g.value for g in greenlets]


def test_a_burst_of_wrong_log_ins_gets_no_500_and_pages_keep_answering(
        start_server, make_users, database_url, measurements):
    server = start_server(CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS=10_000)
    [(_, reader)] = make_users(1, prefix="reader")
    poster = Poster(server)
    probe = psycopg2.connect(database_url)
    probe.autocommit = True
    with probe.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        max_connections = int(cursor.fetchone()[0])
    peak, pages, done = [0], [], gevent.event.Event()

    def sample():
        while not done.is_set():
            with probe.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity")
                peak[0] = max(peak[0], cursor.fetchone()[0])
            gevent.sleep(0.01)

    def read_pages():
        while not done.is_set():
            pages.append(get_page(server, "/rooms/", reader))
            gevent.sleep(0.05)

    quiet = sorted(get_page(server, "/rooms/", reader)[1] for _ in range(10))
    watchers = [gevent.spawn(sample), gevent.spawn(read_pages)]
    started = time.perf_counter()
    answers = all_at_once([lambda i=i: poster.post({"username": f"nobody{i}", "password": "guess"})
                           for i in range(BURST)])
    elapsed = time.perf_counter() - started
    done.set()
    gevent.joinall(watchers, timeout=30, raise_error=True)
    probe.close()
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= 1
    for status, headers, body in answers:
        if status == 503:
            assert headers["Retry-After"] == "2" and BUSY in body
        else:
            assert WRONG in body
    assert pages and all(status == 200 for status, _ in pages), pages
    assert peak[0] < max_connections - MARGIN, (peak[0], max_connections)
    latencies = sorted(seconds for _, seconds in pages)
    measurements["login burst answers"] = dict(sorted(statuses.items()))
    measurements["login burst seconds"] = round(elapsed, 2)
    measurements["login burst /rooms/ latency ms (median, max)"] = (
        round(statistics.median(latencies) * 1000, 1), round(latencies[-1] * 1000, 1))
    measurements["quiet /rooms/ latency ms (median, max)"] = (
        round(statistics.median(quiet) * 1000, 1), round(quiet[-1] * 1000, 1))
    measurements["login burst peak pg_stat_activity / max_connections"] = (peak[0], max_connections)


def test_a_burst_of_sign_ups_gets_no_500(start_server, measurements):
    server = start_server(CHAT_SIGNUP_MAX_PER_ADDRESS=1000)
    poster = Poster(server, "/accounts/signup/")
    answers = all_at_once([lambda i=i: poster.post({"username": f"burst{i}", "password1": PASSWORD,
                                                    "password2": PASSWORD})
                           for i in range(40)])
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {302, 503} and statuses[302] >= 1, statuses
    assert all("The server is busy creating other accounts." in body
               for status, _, body in answers if status == 503)
    measurements["sign-up burst answers"] = dict(sorted(statuses.items()))


@pytest.fixture(scope="module")
def guarded(start_server):
    return start_server(CHAT_LOGIN_MAX_FAILURES=3, CHAT_HASH_QUEUE=30,
                        CHAT_SIGNUP_MAX_PER_ADDRESS=2, CHAT_ROOM_CREATE_MAX_PER_ADDRESS=2)


def test_a_padded_username_is_throttled_with_the_user_it_names(guarded, make_users, password_hash):
    [(alice, _)] = make_users(1, prefix="Alice", password=password_hash)
    poster = Poster(guarded)
    for _ in range(3):
        assert poster.post({"username": alice, "password": "wrong"})[0] == 200
    fullwidth = f"\N{FULLWIDTH LATIN CAPITAL LETTER A}{alice[1:]}"
    for variant in (f"  {alice} ", alice.upper(), fullwidth):
        status, headers, body = poster.post({"username": variant, "password": PASSWORD})
        assert status == 429 and THROTTLED in body, variant
        assert headers["Retry-After"] == "300"


def test_admin_log_in_failures_count_in_the_same_buckets(guarded, make_users, password_hash):
    [(bob, _)] = make_users(1, prefix="bob", password=password_hash)
    poster = Poster(guarded, "/admin/login/")
    for _ in range(3):
        status, _, body = poster.post({"username": bob, "password": "wrong", "next": "/admin/"})
        assert status == 200 and "Please enter the correct username and password" in body
    assert poster.post({"username": bob, "password": PASSWORD, "next": "/admin/"})[0] == 429
    status, _, body = Poster(guarded).post({"username": bob, "password": PASSWORD})
    assert status == 429 and THROTTLED in body


def test_concurrent_tries_never_exceed_the_limit(guarded, make_users, password_hash):
    [(carol, _)] = make_users(1, prefix="carol", password=password_hash)
    poster = Poster(guarded)
    answers = all_at_once([lambda: poster.post({"username": carol, "password": "wrong"})
                           for _ in range(12)])
    statuses = Counter(status for status, _, _ in answers)
    assert statuses == {200: 3, 429: 9}, statuses


def test_a_successful_log_in_takes_its_attempt_back(guarded, make_users, password_hash):
    [(dave, _)] = make_users(1, prefix="dave", password=password_hash)
    poster = Poster(guarded)
    for _ in range(2):
        assert poster.post({"username": dave, "password": "wrong"})[0] == 200
    assert poster.post({"username": dave, "password": PASSWORD})[0] == 302
    for _ in range(2):  # the failures before the success were forgotten with it
        assert poster.post({"username": dave, "password": "wrong"})[0] == 200
    assert poster.post({"username": dave, "password": PASSWORD})[0] == 302


def test_sign_ups_are_limited_per_address(guarded):
    poster = Poster(guarded, "/accounts/signup/")
    statuses = []
    for i in range(3):
        status, headers, body = poster.post({"username": f"newcomer{i}", "password1": PASSWORD,
                                             "password2": PASSWORD})
        statuses.append(status)
    assert statuses == [302, 302, 429]
    assert SIGNUP_LIMITED in body and int(headers["Retry-After"]) > 3000


def test_room_creation_is_limited_per_address(guarded, make_users):
    [(_, session)] = make_users(1, prefix="builder")
    poster = Poster(guarded)
    poster.cookie += f"; sessionid={session}"
    answers = [poster.post({"name": f"Limited room {i}"}, path="/rooms/new/") for i in range(3)]
    assert [status for status, _, _ in answers] == [302, 302, 429]
    assert ROOMS_LIMITED in answers[2][2] and int(answers[2][1]["Retry-After"]) > 3000
