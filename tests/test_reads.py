"""Read markers and unread counts: stored per user and room, monotonic, live on every session.

Live tests run against the shared two-worker gunicorn; the pages' tests use Django's client.
"""
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import Message, ReadMarker, Room
from tests.live import connect, join, receive, receive_type, send, sockets_apart

SLOW_DOWN = "slow down: join, leave, history and read at most 5 a second"


def nothing_more(ws):
    """Assert that nothing but the pong of a ping comes next."""
    send(ws, type="ping", ref="last")
    assert receive(ws) == {"type": "pong", "ref": "last"}


def marker(username, room):
    return ReadMarker.objects.get(user__username=username, room__slug=room).last_read


def test_a_read_moves_the_marker_and_every_session_of_the_user_hears_it_on_both_workers(
        server, make_users, make_room, committed_db):
    (reader, key), (author, _) = make_users(2, prefix="reads")
    room = make_room(messages=5, author=author)
    here, there = sockets_apart(server, key, key)  # one user, two tabs on two workers
    join(here, room)  # the other tab joined no room at all
    send(here, type="read", room=room, seq=3, ref="r1")
    expected = {"type": "unread", "room": room, "read": 3, "count": 2, "mentions": 0}
    assert receive_type(here, "unread") == expected
    assert receive_type(there, "unread") == expected
    assert marker(reader, room) == 3
    for ws in (here, there):
        ws.close()


def test_a_marker_never_moves_back_and_a_lower_seq_is_answered_to_its_socket_only(
        server, make_users, make_room, committed_db):
    (reader, key), (author, _) = make_users(2, prefix="monotonic")
    room = make_room(messages=6, author=author)
    here, there = sockets_apart(server, key, key)
    join(here, room)
    send(here, type="read", room=room, seq=4)
    assert receive_type(there, "unread")["read"] == 4
    assert receive_type(here, "unread")["read"] == 4
    send(here, type="read", room=room, seq=2, ref="back")
    assert receive_type(here, "unread") == {"type": "unread", "room": room, "read": 4, "count": 2,
                                            "mentions": 0, "ref": "back"}
    assert marker(reader, room) == 4
    nothing_more(there)  # the other tab heard nothing: nothing changed
    for ws in (here, there):
        ws.close()


def test_own_and_deleted_messages_are_not_unread_and_a_seq_past_the_last_is_the_last(
        server, make_users, make_room, committed_db):
    (reader, key), (author, _) = make_users(2, prefix="counted")
    room = make_room(messages=4, author=author)
    Message.objects.filter(room__slug=room, seq=3).update(deleted=True)
    ws = connect(server, key)
    join(ws, room)
    send(ws, type="send", room=room, body="mine", ref="own")
    assert receive_type(ws, "message")["seq"] == 5
    send(ws, type="read", room=room, seq=1)
    # Seqs 2 and 4 are unread; 3 is deleted and 5 is the reader's own.
    assert receive_type(ws, "unread")["count"] == 2
    send(ws, type="read", room=room, seq=999)
    assert receive_type(ws, "unread") == {"type": "unread", "room": room, "read": 5, "count": 0,
                                          "mentions": 0}
    assert marker(reader, room) == 5
    ws.close()


def test_a_read_is_validated_needs_the_room_joined_and_has_the_budget_of_join(
        server, make_users, make_room):
    [(_, key)] = make_users(1, prefix="badread")
    room = make_room()
    ws = connect(server, key)
    send(ws, type="read", room=room, seq=1, ref="early")
    assert receive(ws) == {"type": "error", "code": "not_joined", "detail": f"join {room!r} first",
                           "ref": "early"}
    join(ws, room)
    for ref, seq in (("none", None), ("zero", 0), ("text", "3"), ("float", 1.5), ("bool", True)):
        send(ws, type="read", room=room, ref=ref, **({} if seq is None else {"seq": seq}))
        assert receive(ws) == {"type": "error", "code": "bad_request",
                               "detail": "seq must be a whole number from 1 or more", "ref": ref}
    send(ws, type="read", room="no slug!", seq=1, ref="slug")
    assert receive(ws)["detail"] == "room must be a room slug (letters, digits, - and _)"
    send(ws, type="read", room=room, seq=1)  # the marker's first move: published, no ref
    assert receive_type(ws, "unread")["read"] == 0  # an empty room: never past its last seq
    for n in range(30):  # the burst is 20: reads cost the database like joins
        send(ws, type="read", room=room, seq=1, ref=f"b{n}")
    codes = []
    deadline = time.monotonic() + 10
    while len(codes) < 30 and time.monotonic() < deadline:
        event = receive(ws)
        if event.get("ref", "").startswith("b"):
            codes.append(event.get("code") or event["type"])
            if event["type"] == "error":
                assert event["detail"] == SLOW_DOWN
    assert "rate_limited" in codes and "unread" in codes
    ws.close()


# The pages: counts for the page's rooms in one query, the "New messages" line on entry.

@pytest.fixture
def reader(client, django_user_model):
    user = django_user_model.objects.create_user("page-reader")
    client.force_login(user)
    return user


def unread_badges(page):
    return dict(re.findall(r'data-unread-room="([\w-]+)"(?: hidden)? title="unread messages">(\d+\+?)<',
                           page))


def test_the_room_lists_show_each_rooms_unread_count_from_one_query(client, reader, db):
    author = get_user_model().objects.create_user("page-author")
    rooms = [Room.objects.create(slug=f"unread-{n}", name=f"Unread {n}", last_seq=3) for n in range(3)]
    for room in rooms:
        Message.objects.bulk_create(Message(room=room, seq=s, user=author, body=f"m{s}") for s in (1, 2, 3))
    ReadMarker.objects.create(user=reader, room=rooms[0], last_read=2)
    ReadMarker.objects.create(user=reader, room=rooms[1], last_read=3)
    for url in ("/", "/rooms/"):
        with CaptureQueriesContext(connection) as queries:
            page = client.get(url).content.decode()
        badges = unread_badges(page)
        assert (badges["unread-0"], badges["unread-1"], badges["unread-2"]) == ("1", "0", "3")
        assert 'data-unread-room="unread-1" hidden' in page  # nothing unread: no badge shown
        assert sum("chat_readmarker" in q["sql"] for q in queries.captured_queries) == 1


def test_an_unread_count_stops_at_the_maximum_and_says_so(client, reader, db, settings):
    settings.CHAT_UNREAD_MAX = 2
    author = get_user_model().objects.create_user("many-author")
    room = Room.objects.create(slug="unread-many", name="Many", last_seq=5)
    Message.objects.bulk_create(Message(room=room, seq=s, user=author, body="x") for s in range(1, 6))
    assert unread_badges(client.get("/rooms/").content.decode())["unread-many"] == "2+"


def test_the_room_page_marks_the_first_unread_message_of_others_with_a_line(client, reader, db):
    author = get_user_model().objects.create_user("line-author")
    room = Room.objects.create(slug="unread-line", name="Line", last_seq=4)
    users = {1: author, 2: author, 3: reader, 4: author}
    Message.objects.bulk_create(Message(room=room, seq=s, user=u, body=f"m{s}") for s, u in users.items())
    ReadMarker.objects.create(user=reader, room=room, last_read=2)
    page = client.get("/rooms/unread-line/").content.decode()
    line = '<li class="unread-line" id="unread" data-key="3.75"><span>New messages</span></li>'
    assert page.count('class="unread-line"') == 1
    assert re.search(re.escape(line) + r'\s*<li class="msg" id="m4"', page)  # not above own m3
    assert 'data-read="2"' in page
    ReadMarker.objects.filter(user=reader, room=room).update(last_read=4)
    assert 'class="unread-line"' not in client.get("/rooms/unread-line/").content.decode()
