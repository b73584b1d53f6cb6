"""A join served from the hub's memory: what it reads, and that it equals the database's answer.

In process: real socket sessions (their frames captured) on real hubs over the in-process
broker, against the test database, every statement counted.
"""
import json

import gevent
import pytest
from django.contrib.auth import get_user_model
from django.db.backends import utils as db_utils

from chat import metrics, protocol, rooms
from chat.brokers.memory import MemoryBroker
from chat.db import db_work
from chat.hub import Hub
from chat.models import Message
from chat.presence import DatabasePresence
from chat.ratelimit import Budgets, RateLimiter
from chat.sockets import SocketSession


class Captured(SocketSession):
    """A socket session whose frames are kept as events instead of written to a socket."""

    def __init__(self, user, hub):
        super().__init__(None, user, hub=hub, limiter=RateLimiter(1000, 1000), authority=None,
                         session_key="k", budgets=Budgets(db_frame_burst=1000),
                         ping_interval=25, idle_timeout=60)
        self.events = []

    def send_frame(self, frame):
        length = frame[1] & 0x7F
        self.events.append(json.loads(frame[{126: 4, 127: 10}.get(length, 2):]))
        return True

    def ask(self, kind, **fields):
        """Handle one frame; return the reply of ``kind`` (the first event of that type)."""
        del self.events[:]
        self.handle(json.dumps({"type": kind, **fields}))
        return next(e for e in self.events if e["type"] in (kind + "ed", kind, "error", "message"))


class Statements:
    """Every SQL statement this process runs, from any greenlet."""

    def __init__(self, monkeypatch):
        self.sql = []
        original = db_utils.CursorWrapper._execute_with_wrappers

        def counted(cursor, sql, params, many, executor):
            self.sql.append(sql)
            return original(cursor, sql, params, many, executor)

        monkeypatch.setattr(db_utils.CursorWrapper, "_execute_with_wrappers", counted)

    def during(self, action):
        start = len(self.sql)
        result = action()
        return result, self.sql[start:]


def new_hub():
    return Hub(MemoryBroker(), fetch=rooms.messages_between, presence_store=DatabasePresence(30),
               last_seqs=rooms.last_seqs, gap_wait=0.05, history_size=50,
               tracker_options={"batch_max": 500})


@pytest.fixture
def people(pooled_db, make_users):
    names = [name for name, _ in make_users(4, prefix="joiner")]
    with db_work():
        return list(get_user_model().objects.filter(username__in=names).order_by("username"))


def reads(statements, table):
    return [sql for sql in statements if table in sql and sql.lstrip().upper().startswith(("SELECT", "WITH"))
            and "chat_presence" not in sql]


def test_a_join_of_a_public_room_the_worker_holds_reads_no_room_and_no_message(
        people, make_room, monkeypatch):
    statements = Statements(monkeypatch)
    room = make_room(messages=60, author=people[0].username)
    hub = new_hub()
    first, second = Captured(people[0], hub), Captured(people[1], hub)
    joined, sql = statements.during(lambda: first.ask("join", room=room))
    assert [m["seq"] for m in joined["messages"]] == list(range(11, 61))
    assert reads(sql, "chat_message") and reads(sql, "chat_room")  # the first join reads them
    again, sql = statements.during(lambda: second.ask("join", room=room))
    assert reads(sql, "chat_message") == [] and reads(sql, "chat_room") == []
    assert {k: v for k, v in again.items() if k != "presence"} == {
        k: v for k, v in joined.items() if k != "presence"}
    assert again["presence"] == sorted([people[0].username, people[1].username])
    # The second join's statements: the presence arrive (its locks, its upsert) and no more.
    assert len([s for s in sql if "chat_presence" in s or "advisory" in s]) == 2
    hub.stop()


def test_a_private_room_costs_a_join_one_membership_check(people, make_room, monkeypatch):
    statements = Statements(monkeypatch)
    member, outsider, other = people[0], people[1], people[2]
    room = make_room(private=True, members=[member.username, other.username], messages=3,
                     author=member.username)
    hub = new_hub()
    Captured(member, hub).ask("join", room=room)
    refused = Captured(outsider, hub).ask("join", room=room)
    assert refused == {"type": "error", "code": "forbidden",
                       "detail": f"{room!r} is a private room; ask a member to add you"}
    joined, sql = statements.during(lambda: Captured(other, hub).ask("join", room=room))
    assert [m["seq"] for m in joined["messages"]] == [1, 2, 3]
    assert reads(sql, "chat_message") == [] and len(reads(sql, "chat_room")) == 1
    hub.stop()


def database_answer(user, room, since):
    """What a worker that does not hold the room answers: the database path."""
    hub = new_hub()
    try:
        return Captured(user, hub).ask("join", room=room, **({} if since is None else {"since": since}))
    finally:
        hub.stop()


def from_memory():
    return metrics.JOINS_FROM_MEMORY._value.get()


def compare(session, user, room, sinces):
    """Join with each ``since`` from the ring and from the database; return how many rang."""
    rang = 0
    for since in sinces:
        fields = {} if since is None else {"since": since}
        before = from_memory()
        from_memory_path = session.ask("join", room=room, **fields)
        rang += from_memory() - before
        from_database = database_answer(user, room, since)
        strip = lambda e: {k: v for k, v in e.items() if k != "presence"}  # noqa: E731
        assert strip(from_memory_path) == strip(from_database), f"since={since}"
    return rang


def post(session, room, count, tag):
    for n in range(count):
        assert session.ask("send", room=room, body=f"{tag} {n}", ref=f"{tag}-{n}")["type"] == "message"


def delete(hub, room, seq):
    with db_work():
        message = Message.objects.select_related("room").get(room__slug=room, seq=seq)
        message.deleted = True
        message.save(update_fields=["deleted"])
    hub.publish(room, protocol.event("message_deleted", room=room, id=message.id, seq=seq))


def test_the_ring_answers_exactly_what_the_database_does_after_sends_deletes_and_a_resync(
        people, make_room, monkeypatch):
    author, reader = people[0], people[1]
    room = make_room(messages=55, author=author.username)
    hub = new_hub()
    writer, joiner = Captured(author, hub), Captured(reader, hub)
    writer.ask("join", room=room)
    post(writer, room, 7, "live")  # seqs 56..62: the ring moves on
    # The ring holds 13..62: since 0 is below it (the database answers); the rest it answers.
    assert compare(joiner, reader, room, [None, 0, 20, 40, 58, 62, 70]) == 6
    delete(hub, room, 60)  # inside the ring: a hole only the database fills for no since
    delete(hub, room, 5)  # below it
    # None and 0 read the database (and fill the ring again: 12..62 without 60); the rest rang.
    assert compare(joiner, reader, room, [None, 0, 11, 12, 59, 60]) == 4
    post(writer, room, 3, "more")
    hub.resync()  # the broker reconnected: the ring is forgotten, the next join fills it
    gevent.sleep(0.1)
    assert compare(joiner, reader, room, [None, 61, None, 30]) == 3
    delete(hub, room, 64)
    assert compare(joiner, reader, room, [None, 63]) == 1
    hub.stop()


def test_a_join_during_a_burst_of_sends_misses_nothing_and_duplicates_nothing(people, make_room):
    author = people[0]
    room = make_room(messages=10, author=author.username)
    hub = new_hub()
    writer = Captured(author, hub)
    writer.ask("join", room=room)

    def burst():
        for n in range(60):
            writer.ask("send", room=room, body=f"b{n}", ref=f"b{n}")
            gevent.sleep(0)

    sending = gevent.spawn(burst)
    joiners = []
    for user in people[1:] * 3:
        joiner = Captured(user, hub)
        joiner.handle(json.dumps({"type": "join", "room": room}))
        joiners.append(joiner)
        gevent.sleep(0.005)
    sending.join(timeout=30)
    gevent.sleep(0.2)
    for joiner in joiners:
        joined = next(e for e in joiner.events if e["type"] == "joined")
        seqs = [m["seq"] for m in joined["messages"]]
        live = [e["seq"] for e in joiner.events if e["type"] == "message"]
        assert seqs + live == list(range(seqs[0], 71)), "a gap or a duplicate"
        assert seqs[-1] == joined["seq"]
    hub.stop()
