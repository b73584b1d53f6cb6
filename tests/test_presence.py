"""Presence: global across workers in PostgreSQL, healing after outages, debounced per worker.

The store (``DatabasePresence``) against the test database; the tracker (``PresenceTracker``)
with a fake store and fake timers; and after a PostgreSQL outage longer than the TTL, a real
gunicorn of two workers whose users all come back.
"""
import time

import gevent
import pytest
import websocket
from django.utils import timezone
from gevent.event import Event

from chat import presence as presence_module
from chat.db import db_work
from chat.models import Presence
from chat.presence import DatabasePresence, PresenceTracker, presence_event, worker_id
from tests.live import Gunicorn, connect, join, on_worker, receive, send
from tests.test_faults import MAKE_SESSIONS, own_postgres  # noqa: F401 (a fixture)


@pytest.fixture
def presence(pooled_db):
    with db_work():
        Presence.objects.all().delete()
    yield DatabasePresence(ttl=30)
    with db_work():
        Presence.objects.all().delete()


def add(**fields):
    with db_work():
        Presence.objects.create(**fields)


def rows():
    with db_work():
        return sorted(Presence.objects.values_list("room", "username", "worker"))


def arrive(store, room, user):
    """Arrive alone; return (first anywhere?, the usernames present) as the hub sees them."""
    [first] = store.arrive([(room, user)])
    return first, sorted(store.present([room])[room])


def stale():
    return timezone.now() - timezone.timedelta(seconds=60)


# --- the store ---------------------------------------------------------------------------------

def test_the_first_arrival_anywhere_is_announced_once(presence):
    assert arrive(presence, "r", "ann") == (True, ["ann"])
    assert arrive(presence, "r", "ann") == (True, ["ann"])  # again from this worker: still first
    add(room="r", username="bob", worker="other-host:1:x")
    assert arrive(presence, "r", "bob") == (False, ["ann", "bob"])  # bob is on another worker


def test_leaving_one_worker_keeps_presence_held_by_another(presence):
    add(room="r", username="ann", worker="other-host:1:x")
    arrive(presence, "r", "ann")
    assert presence.depart("r", "ann") is False
    with db_work():
        Presence.objects.filter(worker="other-host:1:x").delete()
    arrive(presence, "r", "ann")
    assert presence.depart("r", "ann") is True
    assert rows() == []


def test_two_workers_departing_at_once_announce_the_user_gone_once(presence):
    """Each statement has one snapshot: unlocked, each depart saw the other's row (issue 11)."""
    workers = [DatabasePresence(ttl=30, worker=f"host:{n}:x") for n in (1, 2)]
    for store in workers:
        arrive(store, "r", "ann")
    for _ in range(5):
        departs = [gevent.spawn(store.depart, "r", "ann") for store in workers]
        gevent.joinall(departs, timeout=10, raise_error=True)
        assert sorted(d.value for d in departs) == [False, True]
        for store in workers:
            arrive(store, "r", "ann")


def test_rows_of_a_dead_worker_expire_and_end_presence(presence):
    add(room="r", username="ghost", worker="dead:1:x", seen=stale())
    add(room="r", username="ann", worker="dead:1:x", seen=stale())
    add(room="r", username="ann", worker="alive:2:y")
    assert presence.expire() == [("r", "ghost")]  # ann is still held by a live worker
    assert arrive(presence, "r", "cat")[1] == ["ann", "cat"]


def test_heartbeat_brings_back_deleted_rows_and_names_those_no_other_worker_holds(presence):
    me = worker_id()
    add(room="r", username="ann", worker=me, seen=stale())
    add(room="r", username="cat", worker="alive:2:y")
    add(room="r", username="dan", worker=me, seen=stale())  # no longer held: not refreshed
    back = presence.heartbeat([("r", "ann"), ("r", "bob"), ("r", "cat")])
    assert back == [("r", "bob")]  # ann was there, cat is held elsewhere too
    assert presence.expire() == [("r", "dan")]
    assert rows() == sorted([("r", "ann", me), ("r", "bob", me), ("r", "cat", me),
                             ("r", "cat", "alive:2:y")])


def test_heartbeat_of_nothing_writes_nothing(presence):
    assert presence.heartbeat([]) == []
    assert rows() == []


def test_presence_keeps_the_databases_time_whatever_the_hosts_clock_says(presence, monkeypatch):
    slow = timezone.now() - timezone.timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: slow)  # this host's clock is an hour behind
    arrive(presence, "r", "ann")
    presence.heartbeat([("r", "ann")])
    add(room="r", username="bob", worker="other-host:1:x")  # seen: the database's default
    assert presence.expire() == []
    with db_work():
        live = sorted(Presence.objects.live(30).values_list("username", flat=True))
    assert live == ["ann", "bob"]


def test_the_worker_id_is_random_per_process_and_names_host_and_pid(monkeypatch):
    host, pid, random = worker_id().rsplit(":", 2)
    assert pid == str(presence_module.os.getpid()) and host and len(random) == 16
    assert worker_id() == worker_id()
    monkeypatch.setattr(presence_module, "_worker", None)  # another process, same host and pid
    assert worker_id().rsplit(":", 1)[1] != random
    monkeypatch.setattr(presence_module.os, "getpid", lambda: 424242)  # a forked child
    assert worker_id().split(":")[1] == "424242"


# --- the tracker, with a fake store and fake timers -------------------------------------------

class Session:
    def __init__(self, username):
        self.username = username


class FakeStore:
    """The store's rules in memory, for this worker ("me") and others; calls may be held."""

    def __init__(self):
        self.rows = set()  # (room, user, worker)
        self.calls = []
        self.hold = {}  # call name -> Event that call waits on before it takes effect
        self.fail = set()  # call names that raise

    def _enter(self, name, *args):
        self.calls.append((name, *args))
        if name in self.hold:
            self.hold[name].wait(timeout=10)
        if name in self.fail:
            raise OSError(f"{name} failed")

    def _elsewhere(self, room, user):
        return any((r, u) == (room, user) and w != "me" for r, u, w in self.rows)

    def arrive(self, pairs):
        for room, user in pairs:
            self._enter("arrive", room, user)
        self.rows |= {(room, user, "me") for room, user in pairs}
        return [not self._elsewhere(room, user) for room, user in pairs]

    def depart(self, room, user):
        self._enter("depart", room, user)
        self.rows.discard((room, user, "me"))
        return not self._elsewhere(room, user)

    def heartbeat(self, held):
        self._enter("heartbeat", *held)
        back = [(r, u) for r, u in held if (r, u, "me") not in self.rows and not self._elsewhere(r, u)]
        self.rows |= {(r, u, "me") for r, u in held}
        return back

    def expire(self):
        self._enter("expire")
        gone, self.expired = getattr(self, "expired", []), []
        return gone


class Timers:
    """A fake ``spawn_later`` on a fake clock: ``advance`` runs what fell due."""

    def __init__(self):
        self.now = 0.0
        self.due = []

    def spawn_later(self, seconds, fn, *args):
        timer = Timer(self.now + seconds, fn, args)
        self.due.append(timer)
        return timer

    def advance(self, seconds):
        self.now += seconds
        for timer in sorted(self.due, key=lambda t: t.at):
            if timer.at <= self.now and not timer.killed:
                self.due.remove(timer)
                timer.fn(*timer.args)


class Timer:
    def __init__(self, at, fn, args):
        self.at, self.fn, self.args, self.killed = at, fn, args, False

    def kill(self, block=True):
        self.killed = True


@pytest.fixture
def world():
    store, timers, published = FakeStore(), Timers(), []
    tracker = PresenceTracker(store, lambda slug, event, skip_user=None: published.append(
        (event, skip_user)), debounce=2.0, spawn_later=timers.spawn_later)
    return tracker, store, timers, published


def joined(user, room="r"):
    return presence_event(room, joined=[user])


def left(user, room="r"):
    return presence_event(room, left=[user])


def test_the_first_socket_anywhere_is_announced_to_the_others(world):
    tracker, store, timers, published = world
    tracker.enter("r", Session("ann"))
    tracker.enter("r", Session("ann"))  # a second tab: held already, nothing written
    store.rows.add(("r", "bob", "elsewhere"))
    tracker.enter("r", Session("bob"))  # bob is on another worker
    assert published == [(joined("ann"), "ann")]
    assert [c for c in store.calls if c[0] == "arrive"] == [("arrive", "r", "ann"),
                                                              ("arrive", "r", "bob")]


def test_a_depart_waits_for_the_debounce(world):
    tracker, store, timers, published = world
    ann = Session("ann")
    tracker.enter("r", ann)
    tracker.leave("r", ann)
    timers.advance(1.9)
    assert ("depart", "r", "ann") not in store.calls and published == [(joined("ann"), "ann")]
    timers.advance(0.2)
    assert store.calls[-1] == ("depart", "r", "ann")
    assert published[-1] == (left("ann"), None) and store.rows == set()


def test_the_last_of_two_sockets_ends_presence(world):
    tracker, store, timers, published = world
    tab1, tab2 = Session("ann"), Session("ann")
    tracker.enter("r", tab1)
    tracker.enter("r", tab2)
    tracker.leave("r", tab1)
    timers.advance(5)
    assert tracker.holds() == {("r", "ann")} and len(published) == 1
    tracker.leave("r", tab2)
    tracker.leave("r", tab2)  # twice: counted once
    timers.advance(5)
    assert published == [(joined("ann"), "ann"), (left("ann"), None)]


def test_toggling_join_and_leave_within_the_debounce_announces_nothing_more(world):
    tracker, store, timers, published = world
    for _ in range(5):
        ann = Session("ann")
        tracker.enter("r", ann)
        timers.advance(0.5)
        tracker.leave("r", ann)
        timers.advance(1)
    assert published == [(joined("ann"), "ann")]
    assert [c for c in store.calls if c[0] == "depart"] == []
    timers.advance(2)
    assert published == [(joined("ann"), "ann"), (left("ann"), None)]


def test_a_failed_arrive_leaves_nothing_counted(world):
    tracker, store, timers, published = world
    store.fail.add("arrive")
    with pytest.raises(OSError, match="arrive failed"):
        tracker.enter("r", Session("ann"))
    assert tracker.sockets == {}
    store.fail.clear()
    timers.advance(2)
    assert store.calls[-1] == ("depart", "r", "ann")  # its row, if written, goes


def test_an_arrive_during_a_depart_in_flight_waits_for_it_and_keeps_the_row(world):
    tracker, store, timers, published = world
    ann = Session("ann")
    tracker.enter("r", ann)
    tracker.leave("r", ann)
    store.hold["depart"] = slow = Event()
    departing = gevent.spawn(timers.advance, 2)  # the depart starts and waits on the database
    gevent.sleep(0.01)
    arriving = gevent.spawn(tracker.enter, "r", Session("ann"))
    gevent.sleep(0.05)
    assert ("arrive", "r", "ann") not in store.calls[1:], "the arrive overtook the depart"
    slow.set()
    gevent.joinall([departing, arriving], timeout=5, raise_error=True)
    assert store.rows == {("r", "ann", "me")}, "the depart deleted the newer arrive's row"
    assert published == [(joined("ann"), "ann"), (left("ann"), None), (joined("ann"), "ann")]


def test_a_depart_waits_for_a_heartbeat_in_flight_that_would_bring_its_row_back(world):
    tracker, store, timers, published = world
    ann = Session("ann")
    tracker.enter("r", ann)
    store.hold["heartbeat"] = slow = Event()
    beating = gevent.spawn(tracker.upkeep)
    gevent.sleep(0.01)
    tracker.leave("r", ann)
    departing = gevent.spawn(timers.advance, 2)  # due while the heartbeat's upsert is on its way
    gevent.sleep(0.05)
    assert ("depart", "r", "ann") not in store.calls, "the depart overtook the heartbeat"
    slow.set()
    gevent.joinall([beating, departing], timeout=5, raise_error=True)
    assert store.rows == set(), "the heartbeat brought back a row of a user who left"
    assert published[-1] == (left("ann"), None)


def test_upkeep_reasserts_what_it_holds_and_announces_rows_lost_meanwhile(world):
    tracker, store, timers, published = world
    tracker.enter("r", Session("ann"))
    tracker.enter("r", Session("bob"))
    store.rows.clear()  # deleted during an outage longer than the TTL
    store.rows.add(("r", "bob", "elsewhere"))
    tracker.upkeep()
    assert store.calls[-1] == ("heartbeat", ("r", "ann"), ("r", "bob"))
    assert store.rows == {("r", "ann", "me"), ("r", "bob", "me"), ("r", "bob", "elsewhere")}
    assert published[-1] == (joined("ann"), None)  # to all: others may have heard ann left
    assert len(published) == 3


def test_expiry_waits_for_a_second_good_upkeep_and_spares_users_held_here(world):
    tracker, store, timers, published = world
    tracker.enter("r", Session("ann"))
    store.expired = [("r", "ghost"), ("r", "ann")]
    tracker.upkeep()
    assert ("expire",) not in store.calls  # other workers may not have re-asserted yet
    tracker.upkeep()
    assert store.calls[-1] == ("expire",)
    assert published[-1] == (left("ghost"), None) and (left("ann"), None) not in published
    store.fail.add("heartbeat")
    tracker.upkeep()  # an outage: the count starts again
    store.fail.clear()
    store.expired = [("r", "ghost2")]
    tracker.upkeep()
    assert store.calls[-1][0] == "heartbeat" and published[-1] == (left("ghost"), None)


def test_a_failed_depart_is_retried_at_the_next_upkeep(world):
    tracker, store, timers, published = world
    ann = Session("ann")
    tracker.enter("r", ann)
    tracker.leave("r", ann)
    store.fail.add("depart")
    timers.advance(2)
    assert store.rows == {("r", "ann", "me")} and published == [(joined("ann"), "ann")]
    store.fail.clear()
    tracker.upkeep()
    assert store.calls[-2:] == [("heartbeat",), ("depart", "r", "ann")]
    assert store.rows == set() and published[-1] == (left("ann"), None)


def test_flush_runs_the_departs_not_yet_due(world):
    tracker, store, timers, published = world
    ann = Session("ann")
    tracker.enter("r", ann)
    tracker.leave("r", ann)
    tracker.flush()
    assert published[-1] == (left("ann"), None) and store.rows == set()
    timers.advance(5)
    assert len(published) == 2


# --- a real gunicorn through a PostgreSQL outage longer than the TTL --------------------------

FAST_PRESENCE = {"CHAT_PRESENCE_TTL": "2", "CHAT_PRESENCE_HEARTBEAT": "0.5"}
OUTAGE = 5  # seconds PostgreSQL stays down: more than twice the TTL
HEAL_TIMEOUT = 30  # seconds after PostgreSQL is back for a join to list everyone


def try_join(server, key, room):
    """Connect (if need be) and join; return the ``joined`` event, or None if it failed."""
    try:
        ws = connect(server, key, timeout=5)
        send(ws, type="join", room=room, ref="j")
        while True:
            event = receive(ws, timeout=5)
            if event["type"] in ("joined", "error"):
                ws.close()
                return event if event["type"] == "joined" else None
    except (OSError, websocket.WebSocketException):
        return None  # the handshake reads the session from the database


def presence_seen_by(ws, seen, timeout):
    """Apply every ``presence`` event arriving within ``timeout`` to the set ``seen``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = receive(ws, timeout=max(0.01, deadline - time.monotonic()))
        except websocket.WebSocketTimeoutException:
            break
        if event["type"] == "presence":
            seen |= set(event["joined"])
            seen -= set(event["left"])
    return seen


def test_after_an_outage_longer_than_the_ttl_a_join_lists_the_users_of_every_worker(
        own_postgres, gunicorn_logs, measurements):
    own_postgres.manage("migrate", "--noinput", "-v", "0")
    alice, bob, carol = own_postgres.manage("shell", "--no-imports", "-c", MAKE_SESSIONS).split()
    server = Gunicorn(own_postgres.url, gunicorn_logs, WEB_CONCURRENCY=2, CHAT_BROKER="postgres",
                      CHAT_DB_WAIT_TIMEOUT=2, **FAST_PRESENCE).start()
    try:
        workers = sorted(server.worker_pids())
        a, b = on_worker(server, alice, workers[0]), on_worker(server, bob, workers[1])
        seen = set(join(a, "lobby")["presence"])
        join(b, "lobby")
        seen = presence_seen_by(a, seen, timeout=2)
        assert seen == {"alice", "bob"}

        own_postgres.stop()
        time.sleep(OUTAGE)
        own_postgres.start()
        back = time.monotonic()
        listed = None
        while listed != ["alice", "bob", "carol"]:
            assert time.monotonic() - back < HEAL_TIMEOUT, f"a join still lists {listed}"
            event = try_join(server, carol, "lobby")
            listed = event and event["presence"]
            time.sleep(0.5)
        measurements["presence after an outage: a join lists everyone after, s"] = round(
            time.monotonic() - back, 1)
        # Alice's page too ends with bob present, whatever was announced meanwhile.
        seen = presence_seen_by(a, seen, timeout=3)
        assert {"alice", "bob"} <= seen, seen
        for ws in (a, b):
            ws.close()
    finally:
        server.stop()
