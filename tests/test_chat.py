"""Every row of PROTOCOL.md's tables against a real gunicorn: replies, events and error codes."""
import json
import time

import gevent
import pytest
import websocket

from tests.live import connect, join, receive, receive_type, send


@pytest.fixture
def pair(server, make_users, make_room):
    """Two users, each with a socket, in a fresh room."""
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="pair")
    room = make_room()
    a, b = connect(server, alice_key), connect(server, bob_key)
    join(a, room)
    join(b, room)
    assert receive_type(a, "presence") == {"type": "presence", "room": room, "joined": [bob], "left": []}
    # Alice's arrival went through the broker: it may reach bob after his own joined, which
    # already lists her (clients apply presence idempotently). Let it pass before the test.
    b.settimeout(0.3)
    try:
        stray = json.loads(b.recv())
        assert stray == {"type": "presence", "room": room, "joined": [alice], "left": []}
    except websocket.WebSocketTimeoutException:
        pass
    yield room, (alice, a), (bob, b)
    a.close()
    b.close()


def test_join_replies_joined_with_the_newest_messages_and_presence(server, make_users, make_room):
    [(name, key)] = make_users(1, prefix="joiner")
    room = make_room(messages=60, author=name)
    ws = connect(server, key)
    send(ws, type="join", room=room, ref="j1")
    joined = receive(ws)
    assert {k: v for k, v in joined.items() if k != "messages"} == {
        "type": "joined", "ref": "j1", "room": room, "seq": 60, "more": True, "presence": [name]}
    assert [m["seq"] for m in joined["messages"]] == list(range(11, 61))
    first = joined["messages"][0]
    assert first["user"] == name and first["body"] == "message 11" and first["room"] == room
    assert isinstance(first["id"], int) and first["ts"].endswith("Z")
    ws.close()


def test_join_with_since_returns_what_came_after(server, make_users, make_room):
    [(name, key)] = make_users(1, prefix="since")
    room = make_room(messages=30, author=name)
    ws = connect(server, key)
    joined = join(ws, room, since=25)
    assert [m["seq"] for m in joined["messages"]] == [26, 27, 28, 29, 30]
    assert joined["more"] is False and joined["seq"] == 30
    ws.close()


def test_join_with_since_caps_at_500_and_says_there_is_more(server, make_users, make_room):
    [(name, key)] = make_users(1, prefix="cap")
    room = make_room(messages=620, author=name)
    ws = connect(server, key)
    joined = join(ws, room, since=10)
    assert [m["seq"] for m in joined["messages"]] == list(range(121, 621))
    assert joined["more"] is True
    send(ws, type="history", room=room, before=121, limit=100, ref="h")
    page = receive(ws)
    assert [m["seq"] for m in page["messages"]] == list(range(21, 121)) and page["more"] is True
    ws.close()


def test_send_broadcasts_to_everyone_with_the_ref(pair):
    room, (alice, a), (bob, b) = pair
    send(a, type="send", room=room, body="  hello <b>world</b>  ", ref="m1")
    mine, theirs = receive_type(a, "message"), receive_type(b, "message")
    assert mine == theirs
    assert mine["ref"] == "m1" and mine["user"] == alice and mine["seq"] == 1
    assert mine["body"] == "  hello <b>world</b>  "


def test_typing_reaches_the_others_only(pair):
    room, (alice, a), (bob, b) = pair
    send(a, type="typing", room=room)
    assert receive(b) == {"type": "typing", "room": room, "user": alice}
    send(a, type="ping", ref="after-typing")
    assert receive(a) == {"type": "pong", "ref": "after-typing"}  # no typing echo came first


def test_leave_replies_left_and_ends_presence(pair):
    room, (alice, a), (bob, b) = pair
    send(a, type="leave", room=room, ref="bye")
    assert receive(a) == {"type": "left", "ref": "bye", "room": room}
    assert receive(b) == {"type": "presence", "room": room, "joined": [], "left": [alice]}
    send(a, type="send", room=room, body="still here?", ref="x")
    assert receive(a)["code"] == "not_joined"


def test_closing_the_socket_ends_presence(pair):
    room, (alice, a), (bob, b) = pair
    a.close()
    assert receive(b) == {"type": "presence", "room": room, "joined": [], "left": [alice]}


def test_two_tabs_of_one_user_count_once_in_presence(server, make_users, make_room):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="tabs")
    room = make_room()
    watcher = connect(server, bob_key)
    join(watcher, room)
    tab1, tab2 = connect(server, alice_key), connect(server, alice_key)
    join(tab1, room)
    assert receive(watcher)["joined"] == [alice]
    assert join(tab2, room)["presence"] == [alice, bob]
    tab1.close()
    send(watcher, type="ping", ref="quiet")
    assert receive(watcher) == {"type": "pong", "ref": "quiet"}  # no "left": tab2 is still in
    tab2.close()
    assert receive(watcher) == {"type": "presence", "room": room, "joined": [], "left": [alice]}
    watcher.close()


def test_history_pages_back_with_before_and_limit(server, make_users, make_room):
    [(name, key)] = make_users(1, prefix="history")
    room = make_room(messages=12, author=name)
    ws = connect(server, key)
    join(ws, room)
    send(ws, type="history", room=room, before=6, limit=3, ref="h1")
    page = receive(ws)
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5]
    assert page["more"] is True and page["ref"] == "h1" and page["room"] == room
    send(ws, type="history", room=room, before=3, limit=3)
    page = receive(ws)
    assert [m["seq"] for m in page["messages"]] == [1, 2] and page["more"] is False
    send(ws, type="history", room=room, limit=2)
    assert [m["seq"] for m in receive(ws)["messages"]] == [11, 12]
    ws.close()


@pytest.mark.parametrize("frame, code, detail", [
    ({"type": "join", "room": "no-such-room"}, "unknown_room", "there is no room 'no-such-room'"),
    ({"type": "join", "room": "bad slug!"}, "bad_request", "room must be a room slug (letters, digits, - and _)"),
    ({"type": "join", "room": "lobby", "since": -1}, "bad_request", "since must be a whole number from 0 or more"),
    ({"type": "join", "room": "lobby", "since": "5"}, "bad_request", "since must be a whole number from 0 or more"),
    ({"type": "send", "room": "lobby", "body": "hi", "ref": "r"}, "not_joined", "join 'lobby' first"),
    ({"type": "typing", "room": "lobby"}, "not_joined", "join 'lobby' first"),
    ({"type": "history", "room": "lobby"}, "not_joined", "join 'lobby' first"),
    ({"type": "leave", "room": "lobby"}, "not_joined", "join 'lobby' first"),
    ({"type": "fly"}, "unknown_type", "unknown frame type 'fly'"),
])
def test_errors_carry_code_detail_and_ref(server, make_users, frame, code, detail):
    [(_, key)] = make_users(1, prefix="errors")
    ws = connect(server, key)
    send(ws, **{"ref": "e1", **frame})
    assert receive(ws) == {"type": "error", "code": code, "detail": detail, "ref": frame.get("ref", "e1")}
    ws.close()


@pytest.mark.parametrize("fields, detail", [
    ({"body": ""}, "body must be text of 1 to 4000 characters, not only white space"),
    ({"body": " \n\t "}, "body must be text of 1 to 4000 characters, not only white space"),
    ({"body": "x" * 4001}, "body must be text of 1 to 4000 characters, not only white space"),
    ({"body": 42}, "body must be text of 1 to 4000 characters, not only white space"),
])
def test_bad_bodies_get_bad_request(pair, fields, detail):
    room, (alice, a), _ = pair
    send(a, type="send", room=room, ref="b", **fields)
    assert receive(a) == {"type": "error", "code": "bad_request", "detail": detail, "ref": "b"}


def test_a_body_of_4000_code_points_is_stored_exactly(pair):
    room, (alice, a), (bob, b) = pair
    body = "\U0001F600" * 3999 + "é"
    send(a, type="send", room=room, body=body, ref="long")
    assert receive_type(b, "message")["body"] == body


def test_send_without_a_ref_gets_bad_request(pair):
    room, (alice, a), _ = pair
    send(a, type="send", room=room, body="hi")
    assert receive(a) == {"type": "error", "code": "bad_request",
                          "detail": "send needs a ref, so that a resend is never stored twice"}


@pytest.mark.parametrize("limit", [0, 101, "10", True])
def test_history_limit_out_of_range_gets_bad_request(pair, limit):
    room, (alice, a), _ = pair
    send(a, type="history", room=room, limit=limit, ref="l")
    assert receive(a) == {"type": "error", "code": "bad_request", "ref": "l",
                          "detail": "limit must be a whole number from 1 to 100"}


def test_private_room_is_forbidden_to_non_members(server, make_users, make_room):
    (member, member_key), (outsider, outsider_key) = make_users(2, prefix="private")
    room = make_room(private=True, members=[member])
    ws = connect(server, outsider_key)
    send(ws, type="join", room=room, ref="p")
    assert receive(ws) == {"type": "error", "code": "forbidden", "ref": "p",
                           "detail": f"{room!r} is a private room; ask a member to add you"}
    send(ws, type="send", room=room, body="sneaky", ref="s")
    assert receive(ws)["code"] == "not_joined"
    insider = connect(server, member_key)
    assert join(insider, room)["presence"] == [member]
    ws.close()
    insider.close()


def _errors_after(ws, frames, wanted, timeout=5):
    for frame in frames:
        send(ws, **frame)
    errors = []
    deadline = time.monotonic() + timeout
    while len(errors) < wanted and time.monotonic() < deadline:
        event = receive(ws, timeout=max(0.01, deadline - time.monotonic()))
        if event["type"] == "error":
            errors.append(event)
    return errors


def test_sending_faster_than_the_limit_gets_rate_limited(pair):
    room, (alice, a), _ = pair
    errors = _errors_after(a, [dict(type="send", room=room, body=f"m{n}", ref=f"s{n}")
                               for n in range(25)], wanted=4)
    assert len(errors) >= 4
    assert errors[0]["code"] == "rate_limited"
    assert errors[0]["detail"] == "slow down: at most 10 messages a second"


def test_typing_has_its_own_slower_budget_per_socket(pair):
    room, (alice, a), _ = pair
    errors = _errors_after(a, [dict(type="typing", room=room, ref=f"t{n}") for n in range(6)],
                           wanted=3)
    assert [e["ref"] for e in errors] == ["t3", "t4", "t5"]  # a burst of 3, then 1 a second
    assert errors[0] == {"type": "error", "code": "rate_limited", "ref": "t3",
                         "detail": "slow down: typing at most 1 a second"}


def test_frames_that_cost_the_database_have_a_budget_per_socket(pair):
    room, (alice, a), _ = pair
    errors = _errors_after(a, [dict(type="history", room=room, ref=f"h{n}") for n in range(23)],
                           wanted=2)
    # The join spent one token of the burst of 20.
    assert errors[0]["ref"] in {"h19", "h20", "h21"}
    assert errors[0]["detail"] == "slow down: join, leave, history and read at most 5 a second"


def test_ping_is_not_rate_limited(server, make_users):
    [(_, key)] = make_users(1, prefix="pinger")
    ws = connect(server, key)
    for n in range(60):
        send(ws, type="ping", ref=f"p{n}")
    assert [receive(ws)["type"] for _ in range(60)] == ["pong"] * 60
    ws.close()


def test_rooms_per_socket_are_limited(start_server, make_users, make_room):
    server = start_server(CHAT_DB_FRAME_BURST=60)  # 51 joins at once: past the default burst
    [(_, key)] = make_users(1, prefix="greedy")
    ws = connect(server, key)
    slugs = [make_room() for _ in range(51)]
    for slug in slugs[:50]:
        join(ws, slug)
    send(ws, type="join", room=slugs[50], ref="one-too-many")
    assert receive_type(ws, "error") == {"type": "error", "code": "bad_request", "ref": "one-too-many",
                                         "detail": "a socket may join at most 50 rooms"}
    ws.close()


@pytest.fixture(scope="module")
def starved_server(start_server):
    """One database slot, given up on quickly: a busy database answers server_error."""
    return start_server(CHAT_DB_CONCURRENCY=1, CHAT_DB_WAIT_TIMEOUT=0.2)


def test_a_busy_database_answers_server_error(starved_server, make_users):
    (_, hog_key), (_, key) = make_users(2, prefix="starved")
    hog, ws = connect(starved_server, hog_key), connect(starved_server, key)
    for client in (hog, ws):  # the 101 comes before the view signs the socket in: wait for it
        send(client, type="whoami")
        receive(client)
    send(hog, type="_sleep", seconds=2)
    gevent.sleep(0.3)
    send(ws, type="join", room="lobby", ref="busy")
    assert receive(ws) == {"type": "error", "code": "server_error", "ref": "busy",
                           "detail": "the database is busy; try again"}
    assert receive_type(hog, "_slept")["seconds"] == 2
    assert join(ws, "lobby")["room"] == "lobby"  # and it recovers
    hog.close()
    ws.close()
