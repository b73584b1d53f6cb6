"""The hub hands each room's messages on in seq order, once, and repairs gaps from the database."""
import json

import gevent
import pytest

from chat import rooms
from chat.brokers.memory import MemoryBroker
from chat.hub import Hub
from chat.models import Message, Room
from chat.presence import DatabasePresence


class Recorder:
    """A stand-in for a socket session: records what the hub hands it."""

    def __init__(self, username):
        self.username = username
        self.got = []

    def deliver(self, slug, seq, frame):
        self.got.append((slug, seq, frame))

    def seqs(self):
        return [seq for _, seq, _ in self.got if seq is not None]

    def events(self):
        return [json.loads(frame[2:]) for _, _, frame in self.got]  # frames under 126 bytes


@pytest.fixture
def hub(pooled_db):
    return Hub(MemoryBroker(), fetch=rooms.messages_between, presence=DatabasePresence(ttl=30),
               gap_wait=0.05)


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
    channel = hub.attach(alice, "r")
    publish_message(hub, "r", 5)
    publish_message(hub, "r", 6)
    assert alice.got == []
    assert channel.start_at(room_id=1, seq=5) == 5
    assert alice.seqs() == [6]
    assert channel.start_at(room_id=1, seq=5) == 6  # a later join must read seq 6 itself


def test_a_later_join_does_not_move_the_cursor_back(hub):
    alice, bob = Recorder("alice"), Recorder("bob")
    hub.attach(alice, "r").start_at(room_id=1, seq=0)
    publish_message(hub, "r", 1)
    assert hub.attach(bob, "r").start_at(room_id=1, seq=0) == 1  # bob must read seq 1 itself


def test_a_missing_seq_is_read_from_the_database(hub, make_users, make_room):
    [(author, _)] = make_users(1, prefix="gap")
    slug = make_room(messages=3, author=author)
    room = Room.objects.get(slug=slug)
    alice = Recorder("alice")
    hub.attach(alice, slug).start_at(room.id, 0)
    publish_message(hub, slug, 1)
    publish_message(hub, slug, 3)  # 2 is lost on the way
    assert alice.seqs() == [1]
    gevent.sleep(0.5)
    assert alice.seqs() == [1, 2, 3]
    assert alice.events()[1]["body"] == "message 2"


def test_a_deleted_message_in_a_gap_is_passed_over(hub, make_users, make_room):
    [(author, _)] = make_users(1, prefix="deleted")
    slug = make_room(messages=3, author=author)
    room = Room.objects.get(slug=slug)
    Message.objects.filter(room=room, seq=2).update(deleted=True)
    alice = Recorder("alice")
    hub.attach(alice, slug).start_at(room.id, 0)
    publish_message(hub, slug, 1)
    publish_message(hub, slug, 3)
    gevent.sleep(0.5)
    assert alice.seqs() == [1, 3]


def test_presence_counts_a_users_sockets_once(hub):
    watcher, tab1, tab2 = Recorder("bob"), Recorder("alice"), Recorder("alice")
    hub.attach(watcher, "p")
    hub.enter(watcher, "p")
    hub.attach(tab1, "p")
    hub.enter(tab1, "p")
    hub.attach(tab2, "p")
    assert hub.enter(tab2, "p") == ["alice", "bob"]
    hub.detach(tab1, "p")
    hub.detach(tab2, "p")
    assert [e for e in watcher.events()] == [
        {"type": "presence", "room": "p", "joined": ["alice"], "left": []},
        {"type": "presence", "room": "p", "joined": [], "left": ["alice"]},
    ]
    assert tab1.events() == []  # the joiner is not told of itself


def test_events_without_seq_skip_the_named_user(hub):
    alice, alice_tab, bob = Recorder("alice"), Recorder("alice"), Recorder("bob")
    for session in (alice, alice_tab, bob):
        hub.attach(session, "r")
    hub.publish("r", {"type": "typing", "room": "r", "user": "alice"}, skip_user="alice")
    assert alice.got == alice_tab.got == []
    assert bob.events() == [{"type": "typing", "room": "r", "user": "alice"}]


def test_the_last_session_leaving_drops_the_room(hub):
    alice = Recorder("alice")
    hub.attach(alice, "r")
    hub.detach(alice, "r")
    assert "r" not in hub.channels
    publish_message(hub, "r", 1)  # nobody here: nothing happens
    assert alice.got == []


def test_sockets_leaving_at_once_leave_no_room_behind_and_raise_nothing(hub):
    sessions = [Recorder(f"leaver{n}") for n in range(20)]
    for session in sessions:
        hub.attach(session, "crowd")
        hub.enter(session, "crowd")
    leaving = [gevent.spawn(hub.detach, session, "crowd") for session in sessions]
    gevent.joinall(leaving, timeout=10, raise_error=True)  # each waits on the database
    assert "crowd" not in hub.channels

