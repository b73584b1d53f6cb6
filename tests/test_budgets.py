"""What one client may cost the others: sockets per user, and an outbox bounded in bytes."""
import json
import socket
import time

import pytest
import websocket
from django.contrib.auth import get_user_model

from chat.models import Message, Room
from tests.live import connect, receive_type, send

REFUSED = (4429, "too many connections for this account (at most 20): close some tabs")


@pytest.fixture(scope="module")
def cluster(start_server):
    # A small kernel send buffer: a client that stops reading fills its outbox sooner.
    return start_server(WEB_CONCURRENCY=2, CHAT_SOCKET_SEND_BUFFER=65536)


def first_frame(ws, timeout=5):
    """Return ("close", code, reason) or ("event", the event) for the next frame."""
    ws.settimeout(timeout)
    opcode, frame = ws.recv_data_frame(control_frame=True)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        return "close", int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()
    return "event", json.loads(frame.data)


def test_one_user_keeps_at_most_20_sockets_across_the_workers(cluster, make_users):
    [(_, key)] = make_users(1, prefix="tabs")
    outcomes, pids, sockets = [], set(), []  # sockets: kept open until the test ends
    for n in range(40):  # one after the other, as tabs open: each worker's tally has arrived
        ws = connect(cluster, key)
        sockets.append(ws)
        try:
            send(ws, type="_worker", ref=f"w{n}")
        except OSError:  # closed already
            pass
        outcome = first_frame(ws)
        if outcome[0] == "event":
            pids.add(outcome[1]["pid"])
        outcomes.append(outcome)
    refused = [o for o in outcomes if o[0] == "close"]
    assert len(outcomes) - len(refused) == 20
    assert {o[1:] for o in refused} == {REFUSED}
    assert len(pids) == 2  # the budget held across both workers


def test_a_closed_socket_frees_its_place_in_the_budget(cluster, make_users):
    [(_, key)] = make_users(1, prefix="freed")
    sockets = [connect(cluster, key) for _ in range(20)]
    for ws in sockets:
        send(ws, type="ping", ref="p")
        assert receive_type(ws, "pong")["ref"] == "p"
    extra = connect(cluster, key)
    assert first_frame(extra)[1:] == REFUSED
    sockets.pop().close()
    deadline = time.monotonic() + 5
    while True:  # the other worker hears of the close through the broker
        again = connect(cluster, key)
        send(again, type="ping", ref="again")
        outcome = first_frame(again)
        if outcome[0] == "event" or time.monotonic() > deadline:
            break
    assert outcome[0] == "event"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_a_client_that_never_reads_big_join_replies_is_closed_with_1013(
        cluster, make_users, django_db_blocker, measurements):
    """Each join since 0 is ~2.4 MB here; without a byte bound 20 of them queue ~48 MB."""
    [(username, key)] = make_users(1, prefix="hoarder")
    with django_db_blocker.unblock():
        user = get_user_model().objects.get(username=username)
        room = Room.objects.create(slug=f"big-{user.pk}", name="big", last_seq=500)
        Message.objects.bulk_create(Message(room=room, seq=seq, user=user, body="é" * 2400)
                                    for seq in range(1, 501))
    ws = connect(cluster, key, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    send(ws, type="_worker", ref="w")
    pid = receive_type(ws, "_worker")["pid"]
    before = rss_kib(pid)
    for n in range(20):  # within the burst of database frames
        send(ws, type="join", room=room.slug, since=0, ref=f"j{n}")
    peak = before
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.05)
        if "send queue overflowed" in cluster.log() and f"conn={pid}-" in cluster.log():
            break
    code = None
    ws.settimeout(10)
    while code is None:  # now read what the kernel and the outbox held, up to the close
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big")
            reason = frame.data[2:].decode()
    assert (code, reason) == (1013, "too slow: reconnect and resume with since")
    measurements["worker growth, never-reading client asking 20 x 2.4 MB joins"] = (
        f"{(peak - before) / 1024:.1f} MiB (bound asserted: 24 MiB)")
    # The outbox (4 MiB) plus a frame being written and the kernel's buffers: far below 48 MB.
    assert peak - before < 24 * 1024, f"the worker grew by {(peak - before) // 1024} MiB"
