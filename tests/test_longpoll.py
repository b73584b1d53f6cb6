"""The HTTP long-poll transport against real gunicorns (docs/protocol.md, section 7).

These mirror the WebSocket's protocol tests: join, send and resend, order, resume with
``since`` on any worker, lost responses, errors, budgets, revocation and restarts, over
``POST /http/``.
"""
import http.client
import signal
import time
import uuid

import gevent
import pytest
from django.contrib.auth import get_user_model

from chat import publish
from chat.models import Message
from tests.live import Poller, connect, join, receive_type, send


def send_frame(room, body, ref=None):
    return {"type": "send", "room": room, "body": body, "ref": ref or str(uuid.uuid4())}


def joined_poller(server, key, room, **options):
    poller = Poller(server, key, **options)
    events = poller.exchange({"type": "join", "room": room, "ref": "j"})["events"]
    assert [e["type"] for e in events if e["type"] != "presence"] == ["joined"]
    return poller


def worker_of(poller):
    """The pid of the worker serving ``poller``'s keep-alive connection (a test hook)."""
    events = poller.exchange({"type": "_worker", "ref": "w"})["events"]
    return next(e["pid"] for e in events if e["type"] == "_worker")


def pollers_on_two_workers(server, key, room, attempts=20):
    """Two pollers of one user joined to ``room``, one on each worker (fresh connections)."""
    found = {}
    for _ in range(attempts):
        pair = [gevent.spawn(joined_poller, server, key, room) for _ in range(2)]
        gevent.joinall(pair, timeout=10, raise_error=True)
        for poller in (job.value for job in pair):
            found.setdefault(worker_of(poller), poller)
        if len(found) == 2:
            return list(found.values())
        gevent.sleep(0.05)
    pytest.fail("no poller landed on the second worker")


def test_a_poll_joins_sends_and_hears_a_socket_in_the_same_room(server, make_users, make_room):
    (_, http_key), (_, ws_key) = make_users(2, prefix="lp")
    room = make_room()
    poller = Poller(server, http_key)
    reply = poller.exchange({"type": "join", "room": room, "ref": "j1"})
    assert [(e["type"], e["ref"]) for e in reply["events"]] == [("joined", "j1")]
    assert reply["n"] == 1
    # The first answer says what to keep to; later ones (the client acked one) don't repeat it.
    assert reply["limits"] == {"poll_timeout": 25.0, "frames": 20, "request_rate": 10.0,
                               "request_burst": 20}
    ws = connect(server, ws_key)
    join(ws, room)
    assert "limits" not in poller.exchange(send_frame(room, "over http", "r-http"))
    assert receive_type(ws, "message")["body"] == "over http"
    waiting = gevent.spawn(poller.events, "message")
    gevent.sleep(0.3)  # the poll is waiting when the message comes
    send(ws, type="send", room=room, body="over ws", ref="r-ws")
    assert [m["body"] for m in waiting.get(timeout=20)] == ["over ws"]
    ws.close()


def test_messages_arrive_in_seq_order_each_once(server, make_users, make_room):
    (_, http_key), (_, ws_key) = make_users(2, prefix="lporder")
    room = make_room()
    poller = joined_poller(server, http_key, room)
    ws = connect(server, ws_key)
    join(ws, room)
    for n in range(15):  # within the sender's burst of CHAT_RATE_BURST
        send(ws, type="send", room=room, body=f"m{n}", ref=f"o{n}")
    seqs = []
    deadline = time.monotonic() + 20
    while len(seqs) < 15 and time.monotonic() < deadline:
        seqs += [e["seq"] for e in poller.exchange(wait=True)["events"] if e["type"] == "message"]
    assert seqs == list(range(1, 16))
    ws.close()


def test_a_resent_send_stores_one_message_and_gets_the_original_back(
        server, make_users, make_room, django_db_blocker):
    [(_, key)] = make_users(1, prefix="lpresend")
    room = make_room()
    first, second = pollers_on_two_workers(server, key, room)
    frame = send_frame(room, "once", "same-ref")
    mine = [e for e in first.exchange(frame)["events"] if e["type"] == "message"]
    again = [e for e in second.exchange(frame, wait=True)["events"] if e["type"] == "message"]
    assert [m["seq"] for m in mine] == [1]
    # The original comes back (a member may also have had it broadcast, as over a socket).
    assert {(m["seq"], m["ref"]) for m in again} == {(1, "same-ref")}
    with django_db_blocker.unblock():
        assert Message.objects.filter(room__slug=room).count() == 1


def test_a_lost_response_is_sent_again_under_the_same_n(server, make_users, make_room):
    (_, key), (_, ws_key) = make_users(2, prefix="lplost")
    room = make_room()
    poller = joined_poller(server, key, room)
    ws = connect(server, ws_key)
    join(ws, room)
    send(ws, type="send", room=room, body="lost once", ref="l1")
    receive_type(ws, "message")
    for _ in range(5):  # the presence of the socket's user may come in an answer before
        status, _, lost = poller.post(poller.body(wait=True))
        assert status == 200
        if "lost once" in [e.get("body") for e in lost["events"]]:
            break  # this answer is "lost": applied by nobody
        poller.apply(lost)
    again = poller.exchange(wait=True)  # still acking the response before
    assert (again["stream"], again["n"], again["events"]) == (lost["stream"], lost["n"], lost["events"])
    ws.close()


def test_a_new_stream_on_any_worker_resumes_each_room_after_since(server, make_users, make_room):
    [(_, key)] = make_users(1, prefix="lpresume")
    room = make_room()
    first, second = pollers_on_two_workers(server, key, room)
    for n in range(3):
        first.exchange(send_frame(room, f"while away {n}"))
    # The second worker's connection, but a stream it never saw: it resumes from ``rooms``.
    second.client, second.stream, second.ack = "resuming-client", None, 0
    second.rooms = {room: 1}
    reply = second.exchange()
    assert reply["stream"] != first.stream
    [joined] = [e for e in reply["events"] if e["type"] == "joined"]
    assert ("ref" in joined, [m["seq"] for m in joined["messages"]]) == (False, [2, 3])


def connection_to(server, key, pid, attempts=20):
    """A keep-alive connection that reaches worker ``pid`` (found with throwaway streams)."""
    for _ in range(attempts):
        probe = Poller(server, key)
        if worker_of(probe) == pid:
            return probe.conn
        probe.close()
    pytest.fail(f"no connection reached worker {pid}")


def test_a_newer_request_supersedes_the_waiting_poll(server, make_users, make_room):
    [(_, key)] = make_users(1, prefix="lpsuper")
    room = make_room()
    poller = joined_poller(server, key, room)
    taker = Poller(server, key, client=poller.client)
    taker.conn = connection_to(server, key, worker_of(poller))
    waiting = gevent.spawn(poller.post, poller.body(wait=True))
    gevent.sleep(0.3)
    taker.stream, taker.ack, taker.rooms = poller.stream, poller.ack, poller.rooms
    reply = taker.exchange(send_frame(room, "while polling"))
    assert reply["stream"] == poller.stream
    status, _, old = waiting.get(timeout=10)
    assert (status, old["events"], old.get("superseded")) == (200, [], True)
    assert [e["body"] for e in reply["events"] if e["type"] == "message"] == ["while polling"]


@pytest.mark.parametrize("body, detail", [
    (b"not json", "the body is not valid JSON"),
    (b"[]", "the body must be a JSON object"),
    (b'{"client": "short"}', "client must be 8 to 64 characters of A-Z, a-z, 0-9, _ and -"),
    (b'{"client": "abcdefgh", "ack": -1}', "ack must be the n of the last response applied (0 before any)"),
    (b'{"client": "abcdefgh", "frames": {}}', "frames must be a list of at most 20 frames"),
    (b'{"client": "abcdefgh", "frames": [1]}', "frames[0] must be a JSON object"),
    (b'{"client": "abcdefgh", "rooms": {"a": "x"}}', "rooms['a'] must be the newest seq held (0 or more)"),
])
def test_a_malformed_body_gets_400_with_the_field_named(server, make_users, body, detail):
    [(_, key)] = make_users(1, prefix="lpbad")
    status, _, reply = Poller(server, key).post(body)
    assert (status, reply) == (400, {"error": {"code": "bad_request", "detail": detail}})


def test_a_bad_frame_gets_an_error_event_with_its_ref(server, make_users, make_room):
    [(_, key)] = make_users(1, prefix="lpframe")
    room = make_room()
    poller = Poller(server, key)
    events = poller.exchange({"type": "nope", "ref": "x1"}, send_frame(room, "hi", "x2"))["events"]
    assert [(e["type"], e["code"], e["ref"], e["detail"]) for e in events] == [
        ("error", "unknown_type", "x1", "unknown frame type 'nope'"),
        ("error", "not_joined", "x2", f"join {room!r} first")]


def test_refusals_before_any_frame(server, make_users):
    [(_, key)] = make_users(1, prefix="lprefuse")
    assert Poller(server, None).post({"client": "anonymous1"})[::2] == (
        401, {"close": {"code": 4401, "reason": "authentication required"}})
    status, _, text = Poller(server, key).post({"client": "csrfless1"}, headers={"X-CSRFToken": ""})
    assert status == 403 and "CSRF" in text
    status, _, text = Poller(server, key, origin="https://evil.example").post({"client": "foreign01"})
    assert status == 403 and "Origin checking failed - https://evil.example does not match" in text
    allowed = Poller(server, key, origin="https://allowed.example")  # CHAT_ALLOWED_ORIGINS
    assert allowed.post({"client": "allowed01"})[0] == 200
    big = {"client": "bigbody01", "frames": [], "pad": "x" * 300_000}
    assert Poller(server, key).post(big)[::2] == (413, {"error": {
        "code": "bad_request", "detail": "the body is over 262144 bytes"}})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/http/")
    assert conn.getresponse().status == 405


def test_a_disconnect_ends_a_waiting_poll_with_4401_and_the_next_request_gets_401(
        server, make_users, make_room, django_db_blocker, pooled_db):
    [(username, key)] = make_users(1, prefix="lpkicked")
    room = make_room()
    poller = joined_poller(server, key, room)
    waiting = gevent.spawn(poller.post, poller.body(wait=True))
    gevent.sleep(0.3)
    with django_db_blocker.unblock():
        publish.disconnect(user=get_user_model().objects.get(username=username))
    status, _, reply = waiting.get(timeout=10)
    assert (status, reply["close"]) == (200, {"code": 4401, "reason": "disconnected by the site"})
    with django_db_blocker.unblock():
        from django.contrib.sessions.models import Session
        Session.objects.filter(session_key=key).delete()
    publish.disconnect(session_key=key, reason="signed out")  # forgets the cached look-up
    gevent.sleep(0.5)
    assert poller.post(poller.body())[::2] == (
        401, {"close": {"code": 4401, "reason": "authentication required"}})


@pytest.fixture(scope="module")
def tight(start_server):
    """One worker, a one-connection budget, few requests, short waits and a short linger."""
    return start_server(CHAT_SOCKETS_PER_USER=1, CHAT_HTTP_REQUEST_RATE=1, CHAT_HTTP_REQUEST_BURST=3,
                        CHAT_HTTP_LINGER=1, CHAT_HTTP_POLL_TIMEOUT=1, CHAT_DB_CONCURRENCY=2)


def test_a_stream_counts_in_the_accounts_budget(tight, make_users):
    [(_, key)] = make_users(1, prefix="lpbudget")
    ws = connect(tight, key)
    send(ws, type="ping")
    receive_type(ws, "pong")
    assert Poller(tight, key).post({"client": "overbudget"})[::2] == (429, {"close": {
        "code": 4429, "reason": "too many connections for this account (at most 1): close some tabs"}})
    ws.close()


def test_too_many_requests_on_one_stream_get_429_with_retry_after(tight, make_users):
    [(_, key)] = make_users(1, prefix="lprate")
    poller = Poller(tight, key)
    statuses = []
    for _ in range(5):
        status, response, reply = poller.post(poller.body([{"type": "ping"}]))
        statuses.append(status)
        if status == 200:
            poller.apply(reply)
    assert statuses[:3] == [200, 200, 200] and 429 in statuses
    assert response.getheader("Retry-After") == "1"
    assert reply == {"error": {"code": "rate_limited",
                               "detail": "slow down: at most 1 requests a second with frames on one stream"}}


def test_an_abandoned_stream_ends_after_the_linger_and_leaves_the_room(tight, make_users, make_room):
    (_, key), (watcher, ws_key) = make_users(2, prefix="lplinger")
    room = make_room()
    ws = connect(tight, ws_key)
    join(ws, room)
    poller = joined_poller(tight, key, room)
    left = receive_type(ws, "presence", timeout=10)
    assert left["joined"]  # the poller arrived
    poller.close()  # and goes away without a word
    deadline = time.monotonic() + 10
    while True:
        event = receive_type(ws, "presence", timeout=max(0.1, deadline - time.monotonic()))
        if event.get("left"):
            break
    assert "stream closed conn=" in tight.log() and "code=1001" in tight.log()
    ws.close()


def test_waiting_polls_hold_no_database_connection(tight, make_users, make_room):
    users = make_users(8, prefix="lpnodb")
    room = make_room()
    pollers = [joined_poller(tight, key, room) for _, key in users[:6]]
    waiting = [gevent.spawn(p.post, p.body(wait=True), 10) for p in pollers]
    gevent.sleep(0.3)  # six polls wait on a worker with two database connections
    sender = joined_poller(tight, users[6][1], room)
    started = time.monotonic()
    reply = sender.exchange(send_frame(room, "through"))
    assert [e["body"] for e in reply["events"] if e["type"] == "message"] == ["through"]
    assert time.monotonic() - started < 5
    gevent.joinall(waiting, timeout=10)
    assert all(job.value[0] == 200 for job in waiting)


def test_a_long_poll_spanning_a_worker_restart_resumes_without_loss(start_server, make_users, make_room):
    restarting = start_server(WEB_CONCURRENCY=1, CHAT_GRACEFUL_TIMEOUT=5)
    (_, key), (_, ws_key) = make_users(2, prefix="lprestart")
    room = make_room()
    poller = joined_poller(restarting, key, room)
    waiting = gevent.spawn(poller.post, poller.body(wait=True))
    gevent.sleep(0.3)
    [old_pid] = restarting.worker_pids()
    import os
    os.kill(old_pid, signal.SIGTERM)  # the master starts a new worker
    status, response, reply = waiting.get(timeout=15)
    assert status == 200
    assert response.getheader("Connection") == "close"  # the next request finds the new worker
    assert [e["type"] for e in reply["events"]] == ["reconnect"]
    assert reply["close"] == {"code": 1001, "reason": "server going away"}
    poller.apply(reply)
    deadline = time.monotonic() + 20
    while restarting.worker_pids() in ([], [old_pid]) and time.monotonic() < deadline:
        gevent.sleep(0.1)
    ws = connect(restarting, ws_key)
    join(ws, room)
    for n in range(3):
        send(ws, type="send", room=room, body=f"after {n}", ref=f"a{n}")
    receive_type(ws, "message")
    seqs = []
    while len(seqs) < 3 and time.monotonic() < deadline:
        events = poller.exchange(wait=True, fresh=True)["events"]
        for e in events:
            seqs += [m["seq"] for m in e.get("messages", [])] if e["type"] == "joined" else []
            seqs += [e["seq"]] if e["type"] == "message" else []
    assert seqs == [1, 2, 3]
    ws.close()
