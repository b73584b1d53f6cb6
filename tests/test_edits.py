"""Edit and delete your own message: live to every worker, durable for resumes, bounded by rules.

Live tests run against the shared two-worker gunicorn; the ring test runs real socket sessions
on in-process hubs (as tests/test_join.py does) to compare memory with the database exactly.
"""
import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from chat import metrics
from chat.models import Message, MessageEdit, Room
from tests.live import (connect, join, on_worker, receive, receive_type, send, sockets_apart,
                        worker_of)

TOO_LATE = "too late: messages may be changed for 900 seconds after they are sent"


def sent(ws, room, body, ref):
    send(ws, type="send", room=room, body=body, ref=ref)
    return receive_type(ws, "message")


def ask(ws, **frame):
    """Send ``frame`` and return the next event that carries its ref."""
    send(ws, **frame)
    return receive_type_ref(ws, frame["ref"])


def receive_type_ref(ws, ref, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        event = receive(ws, max(0.01, deadline - time.monotonic()))
        if event.get("ref") == ref:
            return event


def edited_iso(room, seq):
    edited = Message.objects.get(room__slug=room, seq=seq).edited
    return edited.isoformat().replace("+00:00", "Z")


def test_an_edit_reaches_a_socket_on_the_other_worker_and_the_old_body_is_kept(
        server, make_users, make_room, committed_db):
    (author, a_key), (_, b_key) = make_users(2, prefix="editor")
    room = make_room()
    a, b = sockets_apart(server, a_key, b_key)
    join(a, room)
    join(b, room)
    message = sent(a, room, "helo", "m1")
    assert receive_type(b, "message")["body"] == "helo"
    reply = ask(a, type="edit", room=room, seq=message["seq"], body="hello", ref="e1")
    expected = {"type": "message_edited", "room": room, "seq": 1, "id": message["id"],
                "body": "hello", "edited": edited_iso(room, 1), "change": 1}
    assert reply == {**expected, "ref": "e1"}
    assert receive_type(b, "message_edited") == {**expected, "ref": "e1"}
    [history] = MessageEdit.objects.filter(message_id=message["id"]).values_list(
        "action", "body", "by__username", "change")
    assert history == ("edit", "helo", author, 1)
    assert Room.objects.get(slug=room).last_change == 1
    a.close()
    b.close()


def test_a_deletion_reaches_the_other_worker_and_history_lists_its_seq(
        server, make_users, make_room, committed_db):
    (author, a_key), (_, b_key) = make_users(2, prefix="remover")
    room = make_room(messages=3, author=author)
    a, b = sockets_apart(server, a_key, b_key)
    join(a, room)
    join(b, room)
    doomed = Message.objects.get(room__slug=room, seq=2)
    reply = ask(a, type="delete", room=room, seq=2, ref="d1")
    expected = {"type": "message_deleted", "room": room, "id": doomed.pk, "seq": 2, "change": 1}
    assert reply == {**expected, "ref": "d1"}
    assert receive_type(b, "message_deleted") == {**expected, "ref": "d1"}
    page = ask(b, type="history", room=room, ref="h")
    assert [m["seq"] for m in page["messages"]] == [1, 3] and page["deleted"] == [2]
    again = ask(a, type="delete", room=room, seq=2, ref="d2")
    assert again == {"type": "error", "code": "bad_request",
                     "detail": f"message 2 in {room!r} is deleted", "ref": "d2"}
    a.close()
    b.close()


def test_a_resume_with_changes_since_sees_the_edits_and_deletions_made_while_offline(
        server, make_users, make_room, committed_db):
    (author, a_key), (_, b_key) = make_users(2, prefix="offline")
    room = make_room(messages=4, author=author)
    a = connect(server, a_key)
    join(a, room)
    ask(a, type="edit", room=room, seq=1, body="seen live", ref="e0")
    b = connect(server, b_key)
    first = join(b, room, changes_since=0)
    assert first["change"] == 1 and first["messages"][0]["edited"] == edited_iso(room, 1)
    b.close()  # offline from here
    ask(a, type="edit", room=room, seq=3, body="fixed while b was away", ref="e1")
    ask(a, type="delete", room=room, seq=2, ref="d1")
    sent(a, room, "new while away", "m5")  # seq 5, above b's since: comes in full
    b = connect(server, b_key)
    resumed = join(b, room, since=4, changes_since=1)
    ids = dict(Message.objects.filter(room__slug=room).values_list("seq", "id"))
    assert resumed["change"] == 3
    assert resumed["changes"] == [
        {"type": "message_edited", "room": room, "seq": 3, "id": ids[3],
         "body": "fixed while b was away", "edited": edited_iso(room, 3), "change": 2},
        {"type": "message_deleted", "room": room, "id": ids[2], "seq": 2, "change": 3}]
    assert [m["body"] for m in resumed["messages"]] == ["new while away"]
    assert "changes_more" not in resumed
    fresh = join(b, room)  # without since: current bodies and the deleted seq in its range
    assert [(m["seq"], m["body"], "edited" in m) for m in fresh["messages"]] == [
        (1, "seen live", True), (3, "fixed while b was away", True), (4, "message 4", False),
        (5, "new while away", False)]
    assert fresh["deleted"] == [2]
    assert "change" not in fresh and "changes" not in fresh  # a version 1 join sees no more
    a.close()
    b.close()


def test_edits_and_deletions_of_others_messages_are_refused_and_staff_may_make_them_always(
        server, make_users, make_room, committed_db):
    (author, a_key), (_, other_key), (moderator, mod_key) = make_users(3, prefix="rules")
    get_user_model().objects.filter(username=moderator).update(is_staff=True)
    room = make_room(messages=2, author=author)
    other, mod = connect(server, other_key), connect(server, mod_key)
    join(other, room)
    join(mod, room)
    assert ask(other, type="edit", room=room, seq=1, body="mine now", ref="x") == {
        "type": "error", "code": "forbidden", "detail": "you may edit only your own messages",
        "ref": "x"}
    assert ask(other, type="delete", room=room, seq=1, ref="y") == {
        "type": "error", "code": "forbidden", "detail": "you may delete only your own messages",
        "ref": "y"}
    Message.objects.filter(room__slug=room).update(created=timezone.now() - timedelta(hours=1))
    a = connect(server, a_key)
    join(a, room)
    assert ask(a, type="edit", room=room, seq=1, body="too late", ref="late") == {
        "type": "error", "code": "forbidden", "detail": TOO_LATE, "ref": "late"}
    assert ask(a, type="delete", room=room, seq=2, ref="late2")["detail"] == TOO_LATE
    moderated = ask(mod, type="edit", room=room, seq=1, body="[removed link]", ref="m")
    assert moderated["type"] == "message_edited" and moderated["body"] == "[removed link]"
    assert ask(mod, type="delete", room=room, seq=2, ref="md")["type"] == "message_deleted"
    assert MessageEdit.objects.filter(message__room__slug=room, by__username=moderator).count() == 2
    for ws in (other, mod, a):
        ws.close()


@pytest.mark.parametrize("frame, detail", [
    ({"seq": 0, "body": "x"}, "seq must be a whole number from 1 or more"),
    ({"body": "x"}, "seq must be a whole number from 1 or more"),
    ({"seq": "1", "body": "x"}, "seq must be a whole number from 1 or more"),
    ({"seq": 1, "body": " "}, "body must be text of 1 to 4000 characters, not only white space"),
    ({"seq": 99, "body": "x"}, "there is no message 99 in {room!r}"),
], ids=["zero", "missing", "text", "blank", "unknown"])
def test_a_bad_edit_gets_bad_request_with_the_exact_detail(server, make_users, make_room, frame, detail):
    [(author, key)] = make_users(1, prefix="badedit")
    room = make_room(messages=1, author=author)
    ws = connect(server, key)
    join(ws, room)
    assert ask(ws, type="edit", room=room, ref="b", **frame) == {
        "type": "error", "code": "bad_request", "detail": detail.format(room=room), "ref": "b"}
    send(ws, type="delete", room="elsewhere", seq=1, ref="nj")
    assert receive_type_ref(ws, "nj") == {"type": "error", "code": "not_joined",
                                          "detail": "join 'elsewhere' first", "ref": "nj"}
    ws.close()


def test_a_resent_edit_changes_nothing_and_only_the_editor_hears_it_again(
        server, make_users, make_room, committed_db):
    (author, a_key), (_, b_key) = make_users(2, prefix="resend")
    room = make_room(messages=1, author=author)
    a, b = connect(server, a_key), connect(server, b_key)
    join(a, room)
    join(b, room)
    first = ask(a, type="edit", room=room, seq=1, body="once", ref="same")
    assert receive_type(b, "message_edited")["change"] == 1
    again = ask(a, type="edit", room=room, seq=1, body="once", ref="same")
    assert again == first
    send(b, type="ping", ref="p")
    assert receive_type_ref(b, "p") == {"type": "pong", "ref": "p"}  # no second edit came first
    assert Room.objects.get(slug=room).last_change == 1
    a.close()
    b.close()


def test_a_join_served_from_the_workers_memory_shows_the_edited_body(
        server, make_users, make_room, committed_db):
    (author, a_key), (_, b_key) = make_users(2, prefix="ringlive")
    room = make_room(messages=3, author=author)
    a = connect(server, a_key)
    pid = worker_of(a)
    join(a, room)  # this worker now holds the room and its ring
    ask(a, type="edit", room=room, seq=2, body="changed in memory too", ref="e")
    ask(a, type="delete", room=room, seq=3, ref="d")
    b = on_worker(server, b_key, pid)
    joined = join(b, room, changes_since=0)
    assert [(m["seq"], m["body"]) for m in joined["messages"]] == [
        (1, "message 1"), (2, "changed in memory too")]
    assert joined["messages"][1]["edited"] == edited_iso(room, 2)
    assert joined["deleted"] == [3] and joined["change"] == 2
    a.close()
    b.close()


# -- in process: the ring against the database ------------------------------------------------


@pytest.fixture
def people(pooled_db, make_users):
    from chat.db import db_work

    names = [name for name, _ in make_users(3, prefix="ringer")]
    with db_work():
        return list(get_user_model().objects.filter(username__in=names).order_by("username"))


def change(session, kind, **fields):
    """Handle an edit or delete frame; return the event it made (it comes through the broker)."""
    import gevent

    del session.events[:]
    session.handle(json.dumps({"type": kind, **fields}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in session.events if e["type"] in ("message_edited", "message_deleted", "error")]
        if found:
            return found[0]
        gevent.sleep(0.01)
    pytest.fail(f"no answer to {kind}")


def joins_alike(session, user, room, hub_maker, **fields):
    """Join through ``session``'s hub and through a fresh one (the database); both answers."""
    from tests.test_join import Captured

    before = metrics.JOINS_FROM_MEMORY._value.get()
    held = session.ask("join", room=room, **fields)
    rang = metrics.JOINS_FROM_MEMORY._value.get() - before
    hub = hub_maker()
    try:
        fresh = Captured(user, hub).ask("join", room=room, **fields)
    finally:
        hub.stop()
    strip = lambda e: {k: v for k, v in e.items() if k != "presence"}  # noqa: E731
    assert strip(held) == strip(fresh), fields
    return held, rang


def test_the_ring_answers_what_the_database_does_after_edits_and_deletions(people, make_room):
    from tests.test_join import Captured, new_hub, post

    author, reader = people[0], people[1]
    room = make_room(messages=55, author=author.username)
    hub = new_hub()
    writer, joiner = Captured(author, hub), Captured(reader, hub)
    writer.ask("join", room=room)
    post(writer, room, 5, "live")  # 56..60: the ring holds 11..60
    assert change(writer, "edit", room=room, seq=58, body="edited in the ring")["change"] == 1
    assert change(writer, "delete", room=room, seq=59)["change"] == 2
    assert change(writer, "edit", room=room, seq=20, body="below since")["change"] == 3
    rang = 0
    # The ring was filled before the changes: the first three joins show it applied them.
    for fields in ({"since": 57}, {"since": 60}, {"since": 57, "changes_since": 0}, {},
                   {"since": 0}, {"since": 15}, {"since": 57, "changes_since": 3}):
        joined, from_memory = joins_alike(joiner, reader, room, new_hub, **fields)
        rang += from_memory
    assert rang == 5  # the deletion left a hole: no since reads; since 0 is below the ring
    assert [(m["seq"], m["body"], m.get("change")) for m in joined["messages"]] == [
        (58, "edited in the ring", 1), (60, "live 4", None)]
    assert joined["deleted"] == [59] and joined["change"] == 3 and joined["changes"] == []
    resumed = joiner.ask("join", room=room, since=57, changes_since=0)
    assert [(c["type"], c["seq"], c["change"]) for c in resumed["changes"]] == [
        ("message_edited", 20, 3)]  # 58 and 59 are above since: in messages and deleted
    hub.stop()


def test_a_resume_past_the_changes_cap_says_changes_more(people, make_room, settings):
    from tests.test_join import Captured, new_hub

    settings.CHAT_JOIN_MAX_CHANGES = 2
    author = people[0]
    room = make_room(messages=3, author=author.username)
    hub = new_hub()
    writer = Captured(author, hub)
    writer.ask("join", room=room)
    for n in range(3):
        change(writer, "edit", room=room, seq=n + 1, body=f"edit {n}")
    resumed = Captured(people[1], hub).ask("join", room=room, since=3, changes_since=0)
    assert [c["change"] for c in resumed["changes"]] == [1, 2]
    assert resumed["changes_more"] is True and resumed["change"] == 3
    hub.stop()


def test_a_join_with_a_bad_changes_since_gets_bad_request(server, make_users, make_room):
    [(_, key)] = make_users(1, prefix="badchanges")
    room = make_room()
    ws = connect(server, key)
    assert ask(ws, type="join", room=room, since=0, changes_since=-1, ref="j") == {
        "type": "error", "code": "bad_request",
        "detail": "changes_since must be a whole number from 0 or more", "ref": "j"}
    ws.close()


def test_the_admin_shows_a_messages_edit_history(server, make_users, make_room, pooled_db):
    from django.test import Client

    [(author, key)] = make_users(1, prefix="history")
    room = make_room(messages=1, author=author)
    ws = connect(server, key)
    join(ws, room)
    ask(ws, type="edit", room=room, seq=1, body="second thoughts", ref="e")
    ws.close()
    admin = get_user_model().objects.create_superuser(f"admin-{room}", password=None)
    client = Client()
    client.force_login(admin)
    message = Message.objects.get(room__slug=room, seq=1)
    page = client.get(f"/admin/chat/message/{message.pk}/change/").content.decode()
    assert "message 1" in page and "second thoughts" in page and author in page
