"""A socket is worth what its user's session is worth, for as long as it is (chat/authority.py).

Against a real gunicorn with two workers: every revocation reaches the sockets on both
workers, whichever worker (or process) revoked, within a second; the user's other sessions
stay. Delays are recorded under "measured".
"""
import statistics
import time

import gevent
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.backends.db import SessionStore

from chat import publish
from chat.models import Room
from tests.live import (Browser, close_reason, connect, join, post_and_time, receive, receive_type,
                        send, worker_of)

PASSWORD = "a long and secret passphrase"
DELAYS = {}


@pytest.fixture(scope="module")
def cluster(start_server):
    return start_server(WEB_CONCURRENCY=2, CHAT_REVALIDATE_INTERVAL=2, CHAT_MEMBERSHIP_RECHECK=0.5)


@pytest.fixture(scope="module")
def password_hash():
    return make_password(PASSWORD)


@pytest.fixture(autouse=True, scope="module")
def report(measurements):
    yield
    for path, delays in DELAYS.items():
        measurements[f"revocation delay, {path}"] = (
            f"median {statistics.median(delays) * 1000:.0f} ms, worst {max(delays) * 1000:.0f} ms "
            f"over {len(delays)} sockets")


def on_both_workers(server, key, room=None, tries=9):  # 18 sockets: within the budget of 20
    """Open sockets with session ``key`` until both workers serve one; return them all.

    Two at a time, with a pause: one by one, an idle worker tends to win every accept.
    """
    sockets, pids = [], set()
    for _ in range(tries):
        pair = [gevent.spawn(connect, server, key) for _ in range(2)]
        gevent.joinall(pair, timeout=10, raise_error=True)
        for ws in (g.value for g in pair):
            sockets.append(ws)
            pids.add(worker_of(ws))
            if room is not None:
                join(ws, room)
        if len(pids) == 2:
            return sockets
        gevent.sleep(0.05)
    pytest.fail(f"{2 * tries} sockets all landed on one worker")


def assert_closed(sockets, code, reason, started, path):
    """Each socket gets the close frame ``code``/``reason`` within a second of ``started``."""
    for ws in sockets:
        assert close_reason(ws, timeout=5) == (code, reason)
        DELAYS.setdefault(path, []).append(time.monotonic() - started)
    assert max(DELAYS[path][-len(sockets):]) < 1.0, DELAYS[path]


def assert_alive(ws):
    send(ws, type="ping", ref="alive")
    assert receive_type(ws, "pong", timeout=5) == {"type": "pong", "ref": "alive"}


def signed_in(server, make_users, password_hash, prefix):
    """A user and two browsers signed in as them through the log-in form."""
    [(username, _)] = make_users(1, prefix=prefix, password=password_hash)
    browsers = [Browser(server), Browser(server)]
    for browser in browsers:
        browser.login(username, PASSWORD)
    return username, browsers


def test_logging_out_closes_that_sessions_sockets_on_every_worker_only(
        cluster, make_users, make_room, password_hash):
    username, (first, second) = signed_in(cluster, make_users, password_hash, "logout")
    room = make_room()
    doomed = on_both_workers(cluster, first.cookie("sessionid"), room)
    other = connect(cluster, second.cookie("sessionid"))
    join(other, room)
    started, _ = post_and_time(first, "/accounts/logout/", {}, token_page="/rooms/")
    assert_closed(doomed, 4401, "signed out", started, "log-out")
    send(other, type="send", room=room, body="still here", ref="after-logout")
    assert receive_type(other, "message")["body"] == "still here"
    assert_alive(other)


def test_a_password_change_closes_the_other_sessions_and_keeps_its_own(
        cluster, make_users, password_hash):
    username, (changer, other) = signed_in(cluster, make_users, password_hash, "passwd")
    kept = on_both_workers(cluster, changer.cookie("sessionid"))
    doomed = on_both_workers(cluster, other.cookie("sessionid"))
    response = changer.post_form("/accounts/password_change/", {
        "old_password": PASSWORD, "new_password1": PASSWORD + " 2", "new_password2": PASSWORD + " 2"})
    started = time.monotonic()  # the change is published as its response goes out
    assert response.url.endswith("/accounts/password_change/done/")
    assert_closed(doomed, 4401, "password changed: sign in again", started, "password change, from its response")
    time.sleep(0.5)  # what would close the kept sockets has had its chance
    for ws in kept:
        assert_alive(ws)


@pytest.mark.parametrize("change, reason", [
    (lambda user: setattr(user, "is_active", False) or user.save(), "account disabled"),
    (lambda user: user.delete(), "account deleted"),
], ids=["is_active=False", "deleted"])
def test_disabling_or_deleting_a_user_closes_every_socket(
        cluster, make_users, django_db_blocker, pooled_db, change, reason):
    [(username, key)] = make_users(1, prefix="doomed")
    [(_, bystander_key)] = make_users(1, prefix="bystander")
    doomed = on_both_workers(cluster, key)
    bystander = connect(cluster, bystander_key)
    started = time.monotonic()
    with django_db_blocker.unblock():  # from the test process: no worker hears a signal here
        change(get_user_model().objects.get(username=username))
    assert_closed(doomed, 4401, reason, started, reason)
    assert_alive(bystander)


def test_an_expired_session_closes_its_sockets_when_it_expires(cluster, make_users, django_db_blocker):
    [(username, key)] = make_users(1, prefix="expiring")
    with django_db_blocker.unblock():
        store = SessionStore(key)
        store.set_expiry(3)
        store.save()
        expires_at = store.get_expiry_date().timestamp()
    doomed = on_both_workers(cluster, key)
    for ws in doomed:
        assert close_reason(ws, timeout=10) == (4401, "session expired")
        delay = time.time() - expires_at
        DELAYS.setdefault("session expiry", []).append(delay)
        assert -0.2 < delay < 1.0


def test_the_periodic_revalidation_catches_changes_that_fire_no_signal(
        cluster, make_users, django_db_blocker, pooled_db):
    [(username, key)] = make_users(1, prefix="updated")
    doomed = on_both_workers(cluster, key)
    with django_db_blocker.unblock():
        get_user_model().objects.filter(username=username).update(is_active=False)
    for ws in doomed:  # CHAT_REVALIDATE_INTERVAL=2 on this server
        assert close_reason(ws, timeout=5) == (4401, "account disabled")


def test_disconnect_from_plain_django_code_closes_the_users_sockets(
        cluster, make_users, django_db_blocker, pooled_db):
    [(username, key)] = make_users(1, prefix="kicked")
    doomed = on_both_workers(cluster, key)
    started = time.monotonic()
    with django_db_blocker.unblock():
        publish.disconnect(user=get_user_model().objects.get(username=username))
    assert_closed(doomed, 4401, "disconnected by the site", started, "publish.disconnect")


def test_the_admin_action_disconnects_the_selected_users(
        cluster, make_users, password_hash, django_db_blocker):
    [(target, key)] = make_users(1, prefix="target")
    [(admin_name, _)] = make_users(1, prefix="admin", password=password_hash)
    with django_db_blocker.unblock():
        get_user_model().objects.filter(username=admin_name).update(is_staff=True, is_superuser=True)
        target_pk = get_user_model().objects.get(username=target).pk
    doomed = on_both_workers(cluster, key)
    admin = Browser(cluster)
    admin.login(admin_name, PASSWORD)
    started, page = post_and_time(admin, "/admin/auth/user/", {
        "action": "disconnect_now", "_selected_action": str(target_pk)}, token_page="/admin/auth/user/")
    assert "Disconnected 1 user." in page
    assert_closed(doomed, 4401, "disconnected by an administrator", started, "admin action")


def test_removal_from_a_private_room_evicts_the_socket_from_it(
        cluster, make_users, make_room, django_db_blocker, pooled_db):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="member")
    room = make_room(private=True, members=[alice, bob])
    alices = on_both_workers(cluster, alice_key, room)
    bobs = connect(cluster, bob_key)
    join(bobs, room)
    started = time.monotonic()
    with django_db_blocker.unblock():
        Room.objects.get(slug=room).members.remove(get_user_model().objects.get(username=alice))
    for ws in alices:
        assert receive_type(ws, "left", timeout=5) == {
            "type": "left", "room": room, "reason": "forbidden",
            "detail": "you are no longer a member of this private room"}
        DELAYS.setdefault("removed from a private room", []).append(time.monotonic() - started)
    send(bobs, type="send", room=room, body="members only", ref="secret")
    assert receive_type(bobs, "message")["body"] == "members only"
    for ws in alices:
        send(ws, type="history", room=room, ref="peek")
        assert receive(ws) == {"type": "error", "code": "not_joined", "ref": "peek",
                               "detail": f"join {room!r} first"}
        send(ws, type="join", room=room, ref="again")
        assert receive(ws)["code"] == "forbidden"
    assert max(DELAYS["removed from a private room"]) < 1.0


def test_a_room_made_private_evicts_the_non_members(
        cluster, make_users, make_room, django_db_blocker, pooled_db):
    (member, member_key), (outsider, outsider_key) = make_users(2, prefix="private")
    room = make_room(members=[member])
    outsiders = on_both_workers(cluster, outsider_key, room)
    insider = connect(cluster, member_key)
    join(insider, room)
    started = time.monotonic()
    with django_db_blocker.unblock():
        made_private = Room.objects.get(slug=room)
        made_private.private = True
        made_private.save()
    for ws in outsiders:
        assert receive_type(ws, "left", timeout=5)["reason"] == "forbidden"
        DELAYS.setdefault("room made private", []).append(time.monotonic() - started)
    assert_alive(insider)
    send(insider, type="history", room=room, ref="h")
    assert receive_type(insider, "history")["ref"] == "h"


class FakeSession:
    def __init__(self, user_id, session_key):
        self.user_id, self.session_key = user_id, session_key
        self.closing, self.expiry_timer, self.closed_with = False, None, None

    def close(self, code, reason):
        self.closing, self.closed_with = True, (code, reason)


def an_authority(per_user=3, published=None):
    from chat.authority import Authority

    clock = iter(range(1000, 100000))
    return Authority(per_user, publish=(published if published is not None else []).append,
                     wall_clock=lambda: next(clock))


def test_the_budget_counts_the_sockets_other_workers_reported():
    authority = an_authority(per_user=3)
    authority.apply({"type": "tally", "user": 7, "worker": "other", "sockets": 2, "at": 1000})
    assert authority.admit(FakeSession(7, "a"))
    assert not authority.admit(FakeSession(7, "b"))  # 1 here + 2 elsewhere
    authority.apply({"type": "tally", "user": 7, "worker": "other", "sockets": 0, "at": 999})
    assert not authority.admit(FakeSession(7, "b"))  # an older tally changes nothing
    authority.apply({"type": "tally", "user": 7, "worker": "other", "sockets": 0, "at": 1001})
    assert authority.admit(FakeSession(7, "b"))


def test_a_tally_is_published_only_for_users_with_several_sockets_here():
    published = []
    authority = an_authority(per_user=5, published=published)
    first, second = FakeSession(7, "a"), FakeSession(7, "b")
    authority.admit(first)
    gevent.sleep(0)
    assert published == []
    authority.admit(second)
    gevent.sleep(0)
    assert [e["counts"] for e in published] == [[[7, 2]]]
    authority.discard(second)
    gevent.sleep(0)
    assert [e["counts"] for e in published] == [[[7, 2]], [[7, 0]]]
    assert all(e["worker"] == authority.worker for e in published)


def test_counts_that_change_before_a_tally_goes_out_are_published_together():
    published = []
    authority = an_authority(per_user=50, published=published)
    for n in range(3):
        authority.admit(FakeSession(7, f"a{n}"))
        authority.admit(FakeSession(8, f"b{n}"))
    gevent.sleep(0.01)
    assert [e["counts"] for e in published] == [[[7, 3], [8, 3]]]  # each user once, as now


def test_a_tally_of_a_worker_before_batched_tallies_still_counts():
    authority = an_authority(per_user=3)
    authority.apply({"type": "tally", "user": 7, "worker": "old", "sockets": 3, "at": 1000})
    assert authority.elsewhere(7) == 3


def test_a_rekeyed_session_keeps_its_sockets_and_a_disconnect_finds_them_by_the_new_key():
    authority = an_authority()
    session = FakeSession(7, "old")
    authority.admit(session)
    authority.apply({"type": "revalidate", "user": 8, "rekey": ["old", "new"]})  # not theirs
    assert session.session_key == "old"
    authority._rekey(7, "old", "new")
    authority.apply({"type": "disconnect", "session": "new", "user": None, "reason": "signed out"})
    assert session.closed_with == (4401, "signed out")


def test_revalidation_closes_only_the_sessions_found_invalid():
    authority = an_authority()
    good, bad = FakeSession(7, "good"), FakeSession(7, "bad")
    authority.check = lambda entries: {"bad": "password changed: sign in again"}
    assert authority.revalidate([good, bad])
    assert (good.closed_with, bad.closed_with) == (None, (4401, "password changed: sign in again"))


def test_a_failed_revalidation_closes_nothing_and_says_so():
    authority = an_authority()
    session = FakeSession(7, "k")

    def broken(entries):
        raise OSError("database down")

    authority.check = broken
    assert authority.revalidate([session]) is False
    assert session.closed_with is None
