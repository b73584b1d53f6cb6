"""PROTOCOL.md's guarantees against a real gunicorn: gapless, resumable, idempotent, never held up."""
import time

import gevent
import pytest
import socket

from tests.live import close_code, collect_messages, connect, join, send


def stored_seqs(room):
    from chat.models import Message

    return list(Message.objects.filter(room__slug=room).order_by("seq").values_list("seq", flat=True))


def test_twenty_users_sending_at_once_get_a_gapless_sequence_in_order(
        server, make_users, make_room, django_db_blocker):
    users = make_users(20, prefix="burst")
    room = make_room()
    clients = [connect(server, key) for _, key in users]
    for ws in clients:
        join(ws, room)
    gevent.sleep(0.5)  # presence events settle; they are skipped below anyway

    def send_ten(index, ws):
        for n in range(10):
            send(ws, type="send", room=room, body=f"{index}/{n}", ref=f"{index}-{n}")

    receivers = [gevent.spawn(collect_messages, ws, 200) for ws in clients]
    gevent.joinall([gevent.spawn(send_ten, i, ws) for i, ws in enumerate(clients)], timeout=30)
    gevent.joinall(receivers, timeout=60, raise_error=True)

    for receiver in receivers:
        assert [m["seq"] for m in receiver.value] == list(range(1, 201))
    assert sorted(m["body"] for m in receivers[0].value) == sorted(f"{i}/{n}" for i in range(20) for n in range(10))
    with django_db_blocker.unblock():
        assert stored_seqs(room) == list(range(1, 201))
    for ws in clients:
        ws.close()


def test_a_reconnecting_client_resumes_with_since_and_loses_nothing(server, make_users, make_room):
    (_, writer_key), (_, reader_key) = make_users(2, prefix="resume")
    room = make_room()
    writer, reader = connect(server, writer_key), connect(server, reader_key)
    join(writer, room)
    join(reader, room)
    send(writer, type="send", room=room, body="before", ref="b0")
    last_seen = collect_messages(reader, 1)[0]["seq"]
    reader.close()
    for n in range(5):
        send(writer, type="send", room=room, body=f"while away {n}", ref=f"w{n}")
    collect_messages(writer, 6)

    reader = connect(server, reader_key)
    joined = join(reader, room, since=last_seen)
    assert [m["body"] for m in joined["messages"]] == [f"while away {n}" for n in range(5)]
    assert joined["seq"] == last_seen + 5 and joined["more"] is False
    send(writer, type="send", room=room, body="after", ref="a0")
    live = collect_messages(reader, 1)[0]
    assert (live["seq"], live["body"]) == (last_seen + 6, "after")
    writer.close()
    reader.close()


def test_a_resend_after_reconnect_is_stored_once_and_echoed_back(
        server, make_users, make_room, django_db_blocker):
    (_, sender_key), (_, other_key) = make_users(2, prefix="resend")
    room = make_room()
    sender, other = connect(server, sender_key), connect(server, other_key)
    join(sender, room)
    join(other, room)
    send(sender, type="send", room=room, body="first try", ref="once")
    original = collect_messages(sender, 1)[0]
    sender.close()

    sender = connect(server, sender_key)
    join(sender, room, since=0)
    send(sender, type="send", room=room, body="a different body", ref="once")
    echoed = collect_messages(sender, 1)[0]
    assert echoed == original
    send(sender, type="send", room=room, body="next", ref="twice")
    assert [m["seq"] for m in collect_messages(other, 2)] == [original["seq"], original["seq"] + 1]
    with django_db_blocker.unblock():
        assert stored_seqs(room) == [1, 2]
    sender.close()
    other.close()


@pytest.fixture(scope="module")
def fast_server(start_server):
    """A small send queue and no practical rate limit: a reader that stops overflows quickly."""
    return start_server(CHAT_SEND_QUEUE_SIZE=20, CHAT_RATE_LIMIT=100000, CHAT_RATE_BURST=100000,
                        CHAT_CLOSE_TIMEOUT=60, CHAT_SOCKET_SEND_BUFFER=65536)


def test_a_client_that_never_reads_holds_up_nobody_and_is_closed_with_1013(
        fast_server, make_users, make_room, measurements):
    users = make_users(61, prefix="fanout")
    room = make_room()
    stuck_key, sender_keys, reader_keys = users[0][1], [k for _, k in users[1:11]], [k for _, k in users[11:]]
    stuck = connect(fast_server, stuck_key, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    senders = [connect(fast_server, key) for key in sender_keys]
    readers = [connect(fast_server, key) for key in reader_keys]
    for ws in [stuck] + senders + readers:
        join(ws, room)
    # Ten users at 10 messages a second each (the per-user rate limit): 200 messages of 2 KB,
    # 400 KB in all, far more than the stuck socket's buffers and queue hold.
    count, per_sender, body, rate = 200, 20, "x" * 2000, 10
    sent_at = {}

    def timed_collect(ws):
        arrivals = []
        messages = collect_messages(ws, count, timeout=90, arrivals=arrivals)
        return [(m["seq"], at - sent_at[ref]) for m, (ref, at) in zip(messages, arrivals)]

    def send_steadily(index, ws):
        echoes = gevent.spawn(collect_messages, ws, count, 90)  # senders read their room too
        started = time.perf_counter()
        for n in range(per_sender):  # an open loop: the server must keep up
            gevent.sleep(max(0, started + n / rate - time.perf_counter()))
            sent_at[f"{index}-{n}"] = time.perf_counter()
            send(ws, type="send", room=room, body=body, ref=f"{index}-{n}")
        return echoes.get(timeout=90)

    receivers = [gevent.spawn(timed_collect, ws) for ws in readers]
    sending = [gevent.spawn(send_steadily, i, ws) for i, ws in enumerate(senders)]
    gevent.joinall(receivers + sending, timeout=120, raise_error=True)

    latencies = sorted(latency for r in receivers for _, latency in r.value)
    for receiver in receivers:
        assert [seq for seq, _ in receiver.value] == list(range(1, count + 1))
    p99 = latencies[int(len(latencies) * 0.99)]
    measurements["fan-out with a stuck reader: 10 senders at 10/s to 50 readers, p50 / p99 ms"] = (
        f"{latencies[len(latencies) // 2] * 1000:.0f} / {p99 * 1000:.0f}")
    assert p99 < 1.0, f"p99 latency {p99:.2f} s: a stuck client held the others up"
    assert close_code(stuck, timeout=30) == 1013
    for ws in senders + readers:
        ws.close()
