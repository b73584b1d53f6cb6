"""The hub routes: messages through each room's cursor, other events to members, control events
to ``on_control``; it publishes through the broker, retries what failed, and checks its cursors.
"""
import json
import logging
import time

import gevent
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import rooms
from chat.brokers.memory import MemoryBroker
from chat.db import db_work
from chat.errors import EventTooLarge
from chat.hub import CONTROL, EVERYONE, Hub
from chat.models import Message, Room
from tests.live import clients_on_every_worker, collect_messages, join, receive_type, send

GAP_WAIT = 0.05


class Recorder:
    """A stand-in for a socket session: records what the hub hands it."""

    def __init__(self, username):
        self.username = username
        self.got = []

    def deliver(self, slug, seq, frame):
        self.got.append((slug, seq, frame))
        return True

    def send_frame(self, frame):
        self.got.append((None, None, frame))
        return True

    def seqs(self):
        return [seq for _, seq, _ in self.got if seq is not None]

    def events(self):
        return [json.loads(payload(frame)) for _, _, frame in self.got]


def payload(frame):
    """The payload of an unmasked server frame (RFC 6455 section 5.2: 7, 16 or 64-bit length)."""
    length = frame[1] & 0x7F
    return frame[{126: 4, 127: 10}.get(length, 2):]


class FakeTracker:
    """The presence tracker's interface (chat/presence.py): records the hub's calls."""

    def __init__(self, store, publish, debounce):
        self.publish = publish
        self.debounce = debounce
        self.calls = []

    def enter(self, slug, session):
        self.calls.append(("enter", slug, session.username))

    def leave(self, slug, session):
        self.calls.append(("leave", slug, session.username))

    def upkeep(self):
        self.calls.append(("upkeep",))


class Bus:
    """The broker of several hubs in one process, like one PostgreSQL; it can fail on purpose."""

    def __init__(self):
        self.subscribers = []
        self.failures = []  # exceptions raised by the next publishes
        self.published = 0

    def broker(self):
        return BusBroker(self)


class BusBroker:
    def __init__(self, bus):
        self.bus = bus

    def start(self, on_message, on_reconnect=None):
        self.bus.subscribers.append(on_message)

    def publish(self, topic, payload):
        if self.bus.failures:
            raise self.bus.failures.pop(0)
        self.bus.published += 1
        for on_message in list(self.bus.subscribers):
            on_message(topic, payload)

    def stop(self):
        pass


class CountingFetch:
    """``rooms.messages_between``, counting its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, room_id, slug, after, upto=None):
        self.calls.append((after, upto))
        return rooms.messages_between(room_id, slug, after, upto)


def make_hub(broker, fetch=rooms.messages_between, **options):
    options.setdefault("retry_delays", (0.02, 0.05, 0.1))
    options.setdefault("last_seqs", rooms.last_seqs)
    return Hub(broker, fetch=fetch, presence_store=None, tracker_class=FakeTracker,
               gap_wait=GAP_WAIT, **options)


@pytest.fixture
def hub(pooled_db):
    return make_hub(MemoryBroker())


def publish_message(hub, slug, seq):
    hub.publish(slug, {"type": "message", "room": slug, "seq": seq}, seq=seq)


def test_messages_are_handed_on_in_seq_order_once(hub):
    alice = Recorder("alice")
    hub.attach(alice, "r").start_at(room_id=1, seq=0)
    for seq in (2, 1, 1, 3, 2):
        publish_message(hub, "r", seq)
    assert alice.seqs() == [1, 2, 3]


def test_one_frame_is_built_for_all_recipients(hub):
    sessions = [Recorder(f"u{n}") for n in range(3)]
    for session in sessions:
        hub.attach(session, "r").start_at(room_id=1, seq=0)
    publish_message(hub, "r", 1)
    frames = [session.got[0][2] for session in sessions]
    assert frames[0] is frames[1] is frames[2]


def test_a_room_holds_messages_until_a_join_has_read_it(hub):
    alice = Recorder("alice")
    cursor = hub.attach(alice, "r")
    publish_message(hub, "r", 5)
    publish_message(hub, "r", 6)
    assert alice.got == []
    assert cursor.start_at(room_id=1, seq=5) == 5
    assert alice.seqs() == [6]
    assert cursor.start_at(room_id=1, seq=5) == 6  # a later join must read seq 6 itself


def test_a_later_join_does_not_move_the_cursor_back(hub):
    alice, bob = Recorder("alice"), Recorder("bob")
    hub.attach(alice, "r").start_at(room_id=1, seq=0)
    publish_message(hub, "r", 1)
    assert hub.attach(bob, "r").start_at(room_id=1, seq=0) == 1  # bob must read seq 1 itself


def stored_room(make_users, make_room, messages, prefix):
    [(author, _)] = make_users(1, prefix=prefix)
    slug = make_room(messages=messages, author=author)
    return slug, Room.objects.get(slug=slug)


def test_a_missing_seq_is_read_from_the_database(hub, make_users, make_room):
    slug, room = stored_room(make_users, make_room, 3, "gap")
    alice = Recorder("alice")
    hub.attach(alice, slug).start_at(room.id, 0)
    publish_message(hub, slug, 1)
    publish_message(hub, slug, 3)  # 2 is lost on the way
    assert alice.seqs() == [1]
    gevent.sleep(0.5)
    assert alice.seqs() == [1, 2, 3]
    assert alice.events()[1]["body"] == "message 2"


def test_a_seq_the_room_never_gave_out_is_dropped_and_the_real_ones_still_arrive(
        pooled_db, make_users, make_room):
    """A forged NOTIFY (or another deployment on a shared Redis) with a seq far ahead once had
    199,998 seqs "passed over" on the hub and every later real message dropped."""
    slug, room = stored_room(make_users, make_room, 1, "forged")
    fetch = CountingFetch()
    hub = make_hub(MemoryBroker(), fetch)
    alice = Recorder("alice")
    hub.attach(alice, slug).start_at(room.id, 0)
    hub.receive(slug, b'{"seq":200000}\n{"type":"notice","body":"forged"}')
    gevent.sleep(GAP_WAIT * 6)
    assert fetch.calls == [(0, 199999)]  # read once, not in a loop
    assert alice.seqs() == [1]
    assert hub.rooms[slug].cursor.held == {}
    Message.objects.create(room=room, seq=2, user=Message.objects.get(room=room, seq=1).user,
                           body="real")
    Room.objects.filter(pk=room.pk).update(last_seq=2)
    publish_message(hub, slug, 2)
    assert alice.seqs() == [1, 2]


def test_a_deleted_message_in_a_gap_is_passed_over(hub, make_users, make_room):
    slug, room = stored_room(make_users, make_room, 3, "deleted")
    Message.objects.filter(room=room, seq=2).update(deleted=True)
    alice = Recorder("alice")
    hub.attach(alice, slug).start_at(room.id, 0)
    publish_message(hub, slug, 1)
    publish_message(hub, slug, 3)
    gevent.sleep(0.5)
    assert alice.seqs() == [1, 3]


def test_a_header_by_reference_is_read_from_the_database_once(pooled_db, make_users, make_room):
    slug, room = stored_room(make_users, make_room, 2, "byref")
    fetch = CountingFetch()
    hub = make_hub(MemoryBroker(), fetch)
    alice = Recorder("alice")
    hub.attach(alice, slug).start_at(room.id, 0)
    hub.receive(slug, b'{"seq":2,"skip":null,"t":null,"by_ref":true}\n')
    gevent.sleep(GAP_WAIT * 6)
    assert alice.seqs() == [1, 2]
    assert [e["body"] for e in alice.events()] == ["message 1", "message 2"]
    hub.receive(slug, b'{"seq":2,"by_ref":true}\n')  # a second copy: already handed on
    gevent.sleep(GAP_WAIT * 6)
    assert fetch.calls == [(0, 2)]


def test_a_resync_reads_what_the_broker_lost_once(pooled_db, make_users, make_room):
    slug, room = stored_room(make_users, make_room, 3, "resync")
    fetch = CountingFetch()
    hub = make_hub(MemoryBroker(), fetch)
    alice = Recorder("alice")
    hub.attach(alice, slug).start_at(room.id, 1)
    hub.resync()
    publish_message(hub, slug, 3)  # arrives live before the read is done
    gevent.sleep(GAP_WAIT * 6)
    assert alice.seqs() == [2, 3]
    assert fetch.calls == [(1, None)]
    assert hub.rooms[slug].cursor.held == {}


def test_the_check_reads_a_message_whose_publish_was_lost_in_one_query_for_all_rooms(
        pooled_db, make_users, make_room):
    quiet, quiet_room = stored_room(make_users, make_room, 2, "quiet")
    busy, busy_room = stored_room(make_users, make_room, 1, "busy")
    seen = []

    def last_seqs(room_ids):
        seen.append(sorted(room_ids))
        return rooms.last_seqs(room_ids)

    fetch = CountingFetch()
    hub = make_hub(MemoryBroker(), fetch, last_seqs=last_seqs)
    alice, bob = Recorder("alice"), Recorder("bob")
    hub.attach(alice, quiet).start_at(quiet_room.id, 1)  # seq 2 was committed, never heard of
    hub.attach(bob, busy).start_at(busy_room.id, 1)
    assert hub.check_cursors() == 1
    gevent.sleep(GAP_WAIT * 6)
    assert alice.seqs() == [2]
    assert hub.check_cursors() == 0
    gevent.sleep(GAP_WAIT * 6)
    assert seen == [sorted([quiet_room.id, busy_room.id])] * 2
    assert fetch.calls == [(1, 2)]


def test_last_seqs_reads_every_room_in_one_query(pooled_db, make_room):
    slugs = [make_room(), make_room()]
    Room.objects.filter(slug=slugs[1]).update(last_seq=7)
    ids = [Room.objects.get(slug=slug).id for slug in slugs]
    with db_work(), CaptureQueriesContext(connection) as queries:
        assert rooms.last_seqs(ids) == {ids[0]: 0, ids[1]: 7}
        assert len(queries) == 1  # read while the pooled connection is still this greenlet's


def test_a_failed_publish_of_a_message_is_retried_until_every_worker_has_it(pooled_db):
    bus = Bus()
    here, there = make_hub(bus.broker()), make_hub(bus.broker())
    alice, bob = Recorder("alice"), Recorder("bob")
    here.attach(alice, "r").start_at(room_id=1, seq=0)
    there.attach(bob, "r").start_at(room_id=1, seq=0)
    bus.failures = [OSError("Redis timed out"), OSError("Redis timed out")]
    publish_message(here, "r", 1)
    assert alice.seqs() == [1] and bob.seqs() == []  # here at once, there once published
    gevent.sleep(0.3)
    assert bob.seqs() == [1]
    assert bus.published == 1 and not here.unsent and here.republisher is None


def test_retrying_a_publish_gives_up_after_its_delays(pooled_db):
    bus = Bus()
    hub = make_hub(bus.broker(), retry_delays=(0.01, 0.01))
    bus.failures = [OSError("down")] * 5
    publish_message(hub, "r", 1)
    gevent.sleep(0.2)
    assert hub.republisher is None and not hub.unsent
    assert len(bus.failures) == 2  # the first try and two retries


def test_an_event_too_large_for_the_broker_is_raised_to_the_publisher(hub):
    alice = Recorder("alice")
    hub.attach(alice, "r")
    hub.broker = BusBroker(Bus())
    hub.broker.bus.failures = [EventTooLarge("the event is 2000000 bytes")]
    with pytest.raises(EventTooLarge):
        hub.publish("r", {"type": "notice", "room": "r", "body": "x"})
    assert alice.got == []


def test_an_event_without_seq_is_delivered_here_when_the_broker_fails(hub):
    alice = Recorder("alice")
    hub.attach(alice, "r")
    hub.broker = BusBroker(Bus())
    hub.broker.bus.failures = [OSError("down")]
    hub.publish("r", {"type": "typing", "room": "r", "user": "bob"})
    assert alice.events() == [{"type": "typing", "room": "r", "user": "bob"}]


def test_events_without_seq_skip_the_named_user(hub):
    alice, alice_tab, bob = Recorder("alice"), Recorder("alice"), Recorder("bob")
    for session in (alice, alice_tab, bob):
        hub.attach(session, "r")
    hub.publish("r", {"type": "typing", "room": "r", "user": "alice"}, skip_user="alice")
    assert alice.got == alice_tab.got == []
    assert bob.events() == [{"type": "typing", "room": "r", "user": "alice"}]


def test_an_event_without_body_is_never_handed_to_a_session(hub):
    alice = Recorder("alice")
    hub.attach(alice, "r").start_at(room_id=1, seq=0)
    hub.sessions.add(alice)
    hub.receive("r", b'{"seq":null,"skip":null,"t":1,"by_ref":true}\n')  # stripped by NOTIFY
    hub.receive(EVERYONE, b'{"seq":null,"by_ref":true}\n')
    hub.receive("r", b'{"seq":null}')
    assert alice.got == []


@pytest.mark.parametrize("payload", [
    b"x", b"", b"[1]\n{}", b'{"seq":"1"}\n{}', b'{"seq":0}\n{}', b'{"seq":true}\n{}',
    b'{"seq":null,"skip":1}\n{}', b'{"seq":1,"t":"now"}\n{}', b"\xff\n{}", "{}\n{}",
])
def test_a_payload_that_cannot_be_parsed_raises_value_error(hub, payload):
    alice = Recorder("alice")
    hub.attach(alice, "r").start_at(room_id=1, seq=0)
    with pytest.raises(ValueError):
        hub.receive("r", payload)
    assert alice.got == []


def test_a_control_event_reaches_on_control_in_every_worker(pooled_db):
    bus, heard = Bus(), []
    here = make_hub(bus.broker(), on_control=lambda event: heard.append(("here", event)))
    there = make_hub(bus.broker())
    there.on_control = lambda event: heard.append(("there", event))
    event = {"type": "disconnect", "user": "mallory"}
    here.publish(CONTROL, event)
    assert heard == [("here", event), ("there", event)]


def test_a_control_event_is_heard_here_when_the_broker_fails(hub):
    heard = []
    hub.on_control = heard.append
    hub.broker = BusBroker(Bus())
    hub.broker.bus.failures = [OSError("down")]
    hub.publish(CONTROL, {"type": "evict", "room": "r", "user": "mallory"})
    assert heard == [{"type": "evict", "room": "r", "user": "mallory"}]


def test_a_failing_on_control_is_logged_and_never_raised(hub, caplog):
    def explode(event):
        raise RuntimeError("revocation bug")

    hub.on_control = explode
    with caplog.at_level(logging.ERROR, logger="chat.hub"):
        hub.receive(CONTROL, Hub.payload({"type": "disconnect", "user": "x"}))
    assert "the control event disconnect failed" in caplog.text
    assert "RuntimeError: revocation bug" in caplog.text
    with pytest.raises(ValueError):
        hub.receive(CONTROL, Hub.payload(["not", "an", "object"]))


def test_presence_is_counted_by_the_tracker_once_per_socket(hub):
    tab1, tab2 = Recorder("alice"), Recorder("alice")
    for tab in (tab1, tab2):
        hub.attach(tab, "p")
        assert hub.enter(tab, "p").page() == (["alice"], False)
    hub.attach(tab1, "p")
    hub.enter(tab1, "p")  # joined again on the same socket
    hub.detach(tab1, "p")
    hub.detach(tab2, "p")
    hub.detach(tab2, "p")  # twice: counted once
    assert hub.tracker.calls == [("enter", "p", "alice"), ("enter", "p", "alice"),
                                 ("leave", "p", "alice"), ("enter", "p", "alice"),
                                 ("leave", "p", "alice"), ("leave", "p", "alice")]
    assert hub.tracker.debounce == 2.0


def test_a_socket_that_never_entered_is_not_uncounted(hub):
    watcher = Recorder("bob")
    hub.attach(watcher, "p")
    hub.detach(watcher, "p")
    assert hub.tracker.calls == []


def test_the_trackers_events_skip_the_named_user(hub):
    alice, bob = Recorder("alice"), Recorder("bob")
    hub.attach(alice, "p")
    hub.attach(bob, "p")
    event = {"type": "presence", "room": "p", "joined": ["alice"], "left": []}
    hub.tracker.publish("p", event, skip_user="alice")
    assert alice.got == []
    assert bob.events() == [event]


def test_maintain_runs_the_trackers_upkeep_and_survives_its_failures(hub):
    upkeeps = []

    def upkeep():
        upkeeps.append(1)
        if len(upkeeps) == 1:
            raise OSError("the database is away")

    hub.tracker.upkeep = upkeep
    loop = gevent.spawn(hub.maintain, 0.01)
    gevent.sleep(0.1)
    loop.kill()
    assert len(upkeeps) >= 3


def test_the_last_session_leaving_drops_the_room(hub):
    alice = Recorder("alice")
    hub.attach(alice, "r")
    hub.detach(alice, "r")
    assert "r" not in hub.rooms
    publish_message(hub, "r", 1)  # nobody here: nothing happens
    assert alice.got == []


def test_sockets_leaving_at_once_leave_no_room_behind_and_raise_nothing(hub):
    sessions = [Recorder(f"leaver{n}") for n in range(20)]
    for session in sessions:
        hub.attach(session, "crowd")
        hub.enter(session, "crowd")
    leaving = [gevent.spawn(hub.detach, session, "crowd") for session in sessions]
    gevent.joinall(leaving, timeout=10, raise_error=True)
    assert "crowd" not in hub.rooms
    assert len([c for c in hub.tracker.calls if c[0] == "leave"]) == 20


@pytest.fixture(scope="module")
def two_workers(start_server):
    return start_server(WEB_CONCURRENCY=2)


def sender_and_reader_on_two_workers(server, make_users, make_room, prefix):
    """Join a new room from a socket on each worker; return (room, sender, reader)."""
    users = make_users(20, prefix=prefix)
    room = make_room()
    placed, extra = clients_on_every_worker(server, [key for _, key in users], 2)
    for ws in extra:
        ws.close()
    (_, sender), (_, reader) = placed.values()
    join(sender, room)
    join(reader, room)
    return room, sender, reader


def fail_publishes(ws, count):
    send(ws, type="_fail_publishes", count=count)
    return receive_type(ws, "_failing_publishes")["pid"]


def test_a_failed_publish_is_retried_live(two_workers, make_users, make_room):
    room, sender, reader = sender_and_reader_on_two_workers(two_workers, make_users, make_room, "retry")
    fail_publishes(sender, 1)
    send(sender, type="send", room=room, body="once more", ref="m1")
    assert collect_messages(sender, 1)[0]["body"] == "once more"  # its own worker at once
    assert collect_messages(reader, 1, timeout=10)[0]["body"] == "once more"
    deadline = time.monotonic() + 5  # logged just after the publish the reader already heard
    while "published again what had failed" not in (log := two_workers.log()):
        assert time.monotonic() < deadline, "the retry was never logged"
        time.sleep(0.05)
    assert f"publishing {room}#1 failed (publish failed on purpose (_fail_publishes)); retrying" in log
    assert f"room {room}: reading seqs 1-1 " not in log  # the retry delivered it, not the check
    sender.close()
    reader.close()


def test_a_quiet_rooms_last_message_reaches_every_worker_when_its_publish_is_lost(
        two_workers, make_users, make_room, measurements):
    room, sender, reader = sender_and_reader_on_two_workers(two_workers, make_users, make_room, "lost")
    fail_publishes(sender, 100)  # the first try and every retry fail: only the check is left
    sent_at = time.monotonic()
    send(sender, type="send", room=room, body="the last word", ref="last")
    assert collect_messages(sender, 1)[0]["body"] == "the last word"
    heard = collect_messages(reader, 1, timeout=15)[0]
    took = time.monotonic() - sent_at
    measurements["a lost publish: the other worker's socket got the message after, seconds"] = round(took, 1)
    assert (heard["seq"], heard["body"]) == (1, "the last word")
    assert took < 6  # CHAT_CURSOR_CHECK_INTERVAL (3 s) + CHAT_GAP_WAIT, and room to spare
    assert f"room {room}: reading seqs 1-1 from the database" in two_workers.log()
    fail_publishes(sender, 0)
    sender.close()
    reader.close()


class PresentStore:
    """Who is present, by room; counts the reads."""

    def __init__(self, names):
        self.names, self.reads = names, []
        self.during = lambda: None  # what happens while the read is in the database

    def present(self, slugs):
        self.reads.append(sorted(slugs))
        self.during()
        return {slug: set(self.names.get(slug, ())) for slug in slugs}


def test_the_heartbeat_reads_every_held_room_s_roster_in_one_query():
    store = PresentStore({"a": {"ann"}, "b": {"bob"}})
    hub = Hub(MemoryBroker(), fetch=rooms.messages_between, presence_store=None,
              tracker_class=FakeTracker)
    hub.presence_store = store
    for slug in ("a", "b"):
        hub.attach(Recorder("x"), slug)
    gevent.sleep(0.01)  # each room's first read, at attach
    store.names = {"a": {"ann", "cy"}, "b": set()}
    store.during = lambda: hub.rooms["a"].roster.apply(["dee"], [])  # kept: newer than the read
    hub.refresh_rosters()
    assert store.reads[-1] == ["a", "b"] and len(store.reads) == 3
    assert hub.rooms["a"].roster.page() == (["ann", "cy", "dee"], False)
    assert hub.rooms["b"].roster.page() == ([], False)
