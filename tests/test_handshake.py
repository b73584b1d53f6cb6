"""The handshakes' session look-ups (chat/handshake.py): batched, remembered briefly, revocable."""
import datetime

import gevent
import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User

from chat.handshake import SignIns
from tests.live import Browser, close_reason, connect, post_and_time, receive_type, send

PASSWORD = "a long and secret passphrase"
LATER = datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc)


class LookUps:
    """A fake ``sessioncheck.signed_in``: each key names user ``int(key[0])``; records batches."""

    def __init__(self, delay=0.01):
        self.batches, self.delay = [], delay

    def __call__(self, keys):
        self.batches.append(sorted(keys))
        gevent.sleep(self.delay)  # as the database would: other handshakes arrive meanwhile
        return {key: (User(pk=int(key[0]), username=f"u{key[0]}"), LATER) for key in keys}


def test_handshakes_arriving_during_a_look_up_are_looked_up_together_in_the_next():
    look_ups = LookUps()
    sign_ins = SignIns(look_up=look_ups, ttl=0)
    first = gevent.spawn(sign_ins.look_up, "1a")
    gevent.sleep(0.001)  # the first batch is in the "database"
    rest = [gevent.spawn(sign_ins.look_up, key) for key in ("2a", "3a", "2a")]
    gevent.joinall([first, *rest], timeout=2, raise_error=True)
    assert look_ups.batches == [["1a"], ["2a", "3a"]]
    assert [g.value[0].pk for g in rest] == [2, 3, 2]


def test_a_session_found_is_remembered_for_the_ttl_only():
    now = [0.0]
    look_ups = LookUps(delay=0)
    sign_ins = SignIns(look_up=look_ups, ttl=5, clock=lambda: now[0])
    assert sign_ins.look_up("1a")[0].pk == 1
    now[0] = 4.9
    assert sign_ins.look_up("1a")[0].pk == 1
    assert look_ups.batches == [["1a"]]
    now[0] = 5.0
    sign_ins.look_up("1a")
    assert look_ups.batches == [["1a"], ["1a"]]


def test_a_session_past_its_expiry_is_not_taken_from_memory():
    look_ups = LookUps(delay=0)
    expired = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    sign_ins = SignIns(look_up=lambda keys: (look_ups(keys), {"1a": (User(pk=1), expired)})[1])
    sign_ins.look_up("1a")
    sign_ins.look_up("1a")
    assert look_ups.batches == [["1a"], ["1a"]]


@pytest.mark.parametrize("event, forgotten", [
    ({"type": "disconnect", "session": "1a", "user": None}, {"1a"}),
    ({"type": "disconnect", "session": None, "user": 1}, {"1a", "1b"}),
    ({"type": "revalidate", "user": 1}, {"1a", "1b"}),
    ({"type": "tally", "user": 1, "worker": "w", "sockets": 3}, set()),
])
def test_a_revocation_forgets_the_sessions_it_revokes(event, forgotten):
    look_ups = LookUps(delay=0)
    sign_ins = SignIns(look_up=look_ups)
    for key in ("1a", "1b", "2a"):
        sign_ins.look_up(key)
    sign_ins.apply(event)
    assert set(sign_ins.known) == {"1a", "1b", "2a"} - forgotten


def test_a_look_up_during_which_a_revocation_arrived_is_done_again():
    look_ups = LookUps()
    sign_ins = SignIns(look_up=look_ups)
    pending = gevent.spawn(sign_ins.look_up, "1a")
    gevent.sleep(0.001)
    sign_ins.apply({"type": "disconnect", "session": "1a", "user": None})
    pending.join(timeout=2)
    assert look_ups.batches == [["1a"], ["1a"]]


@pytest.fixture(scope="module")
def cluster(start_server):
    return start_server(WEB_CONCURRENCY=2)


def test_a_session_logged_out_opens_no_socket_though_a_worker_remembered_it(cluster, make_users):
    [(username, _)] = make_users(1, prefix="remembered", password=make_password(PASSWORD))
    browser = Browser(cluster)
    browser.login(username, PASSWORD)
    key = browser.cookie("sessionid")
    tabs = [gevent.spawn(connect, cluster, key) for _ in range(4)]  # both workers remember it
    gevent.joinall(tabs, timeout=10, raise_error=True)
    for ws in (g.value for g in tabs):
        send(ws, type="whoami", ref="w")
        assert receive_type(ws, "whoami")["user"] == username
    post_and_time(browser, "/accounts/logout/", {}, token_page="/rooms/")
    for ws in (g.value for g in tabs):
        assert close_reason(ws, timeout=5) == (4401, "signed out")
    again = [gevent.spawn(connect, cluster, key) for _ in range(4)]
    gevent.joinall(again, timeout=10, raise_error=True)
    for ws in (g.value for g in again):
        assert close_reason(ws, timeout=5) == (4401, "authentication required")


def test_a_handshake_that_finds_the_database_busy_is_closed_with_1013(start_server, make_users):
    busy = start_server(CHAT_DB_CONCURRENCY="1", CHAT_DB_WAIT_TIMEOUT="0.5",
                        CHAT_SESSION_CACHE_TTL="0")
    (_, sleeper_key), (_, late_key) = make_users(2, prefix="dbbusy")
    sleeper = connect(busy, sleeper_key)
    send(sleeper, type="_sleep", seconds=3, ref="s")  # holds the one pooled connection
    gevent.sleep(0.3)
    late = connect(busy, late_key)
    assert close_reason(late, timeout=5) == (1013, "the server is busy: try again later")
    assert receive_type(sleeper, "_slept", timeout=10)["ref"] == "s"
