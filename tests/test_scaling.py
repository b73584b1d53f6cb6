"""Many workers and many hosts behave as one chat, through PostgreSQL LISTEN/NOTIFY."""
import os
import signal
import time

import gevent
import pytest

from tests.live import clients_on_every_worker, collect_messages, connect, join, receive_type, send

FAST_PRESENCE = {"CHAT_PRESENCE_HEARTBEAT": "0.5", "CHAT_PRESENCE_TTL": "2"}


@pytest.fixture(scope="module")
def cluster(start_server):
    return start_server(WEB_CONCURRENCY=3, **FAST_PRESENCE)


def test_every_client_on_every_worker_gets_every_message_once_in_order(cluster, make_users, make_room):
    users = make_users(40, prefix="spread")
    room = make_room()
    placed, extra = clients_on_every_worker(cluster, [k for _, k in users], 3)
    clients = [ws for _, ws in placed.values()] + extra
    for ws in clients:
        join(ws, room)
    receivers = [gevent.spawn(collect_messages, ws, 30) for ws in clients]

    def send_ten(index, ws):
        for n in range(10):
            send(ws, type="send", room=room, body=f"{index}/{n}", ref=f"{index}-{n}")

    gevent.joinall([gevent.spawn(send_ten, i, ws) for i, ws in enumerate(clients[:3])], timeout=30)
    gevent.joinall(receivers, timeout=60, raise_error=True)
    for receiver in receivers:
        assert [m["seq"] for m in receiver.value] == list(range(1, 31))
    for ws in clients:
        ws.close()


def test_presence_is_global_across_workers(cluster, make_users, make_room):
    users = make_users(30, prefix="global")
    room = make_room()
    placed, extra = clients_on_every_worker(cluster, [k for _, k in users], 3)
    names = {key: name for name, key in users}
    (key_a, a), (key_b, b) = list(placed.values())[:2]  # two different workers
    join(b, room)
    joined = join(a, room)
    assert joined["presence"] == sorted([names[key_a], names[key_b]])
    assert receive_type(b, "presence") == {"type": "presence", "room": room,
                                           "joined": [names[key_a]], "left": []}
    a.close()
    assert receive_type(b, "presence") == {"type": "presence", "room": room,
                                           "joined": [], "left": [names[key_a]]}
    for ws in [b, placed[list(placed)[2]][1]] + extra:
        ws.close()


def test_two_hosts_sharing_the_database_are_one_chat(start_server, cluster, make_users, make_room):
    other_host = start_server(**FAST_PRESENCE)
    (a_name, a_key), (b_name, b_key) = make_users(2, prefix="hosts")
    room = make_room()
    a, b = connect(cluster, a_key), connect(other_host, b_key)
    join(a, room)
    assert join(b, room)["presence"] == sorted([a_name, b_name])
    assert receive_type(a, "presence")["joined"] == [b_name]
    send(b, type="send", room=room, body="across hosts", ref="x1")
    assert collect_messages(a, 1)[0]["body"] == "across hosts"
    send(a, type="send", room=room, body="and back", ref="x2")
    assert [m["body"] for m in collect_messages(b, 2)] == ["across hosts", "and back"]
    a.close()
    b.close()


def test_a_killed_worker_loses_nothing_and_its_users_presence_expires(
        start_server, make_users, make_room, measurements):
    doomed = start_server(WEB_CONCURRENCY=2, **FAST_PRESENCE)
    users = make_users(30, prefix="killed")
    names = {key: name for name, key in users}
    room = make_room()
    placed, extra = clients_on_every_worker(doomed, [k for _, k in users], 2)
    (victim_pid, (victim_key, victim)), (_, (survivor_key, survivor)) = placed.items()
    join(survivor, room)
    join(victim, room)
    assert receive_type(survivor, "presence")["joined"] == [names[victim_key]]
    send(survivor, type="send", room=room, body="before", ref="b")
    last_seen = collect_messages(victim, 1)[0]["seq"]

    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    for n in range(5):
        send(survivor, type="send", room=room, body=f"after {n}", ref=f"a{n}")
    left = receive_type(survivor, "presence", timeout=20)
    measurements["killed worker: its user's presence ended after, seconds"] = round(
        time.monotonic() - killed_at, 1)
    assert left["left"] == [names[victim_key]]

    back = connect(doomed, victim_key)  # the client reconnects, to whichever worker
    resumed = join(back, room, since=last_seen)
    assert [m["body"] for m in resumed["messages"]] == [f"after {n}" for n in range(5)]
    for ws in [survivor, back] + extra:
        ws.close()
