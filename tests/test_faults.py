"""Faults the server survives, each against a real gunicorn (README.md, "Faults it survives").

The database stopped mid-conversation and back, the database absent at start, slowloris
clients, and thousands of sockets dropped without a close frame.
"""
import itertools
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time

import gevent
import psycopg2

from tests.live import BASE_DIR, collect_messages, connect, free_port, receive_type, send

START_REFUSAL_TIMEOUT = 30  # seconds gunicorn may take to give up on an absent database


def test_an_unreachable_database_at_start_stops_gunicorn_with_what_to_fix(tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "DATABASE_URL": f"postgres://chat:secret@127.0.0.1:{port}/chat",
           "CHAT_BIND": f"127.0.0.1:{free_port()}", "CHAT_DB_START_TIMEOUT": "2",
           "WEB_CONCURRENCY": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi"],
                            cwd=BASE_DIR, env=env, capture_output=True, text=True,
                            timeout=START_REFUSAL_TIMEOUT)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"Cannot reach the database at 127.0.0.1:{port}/chat after 2 s (" in output, output
    assert ("Start PostgreSQL there, or fix DATABASE_URL (postgres://user:password@host:port/name), "
            "or unset it to use the embedded PostgreSQL; CHAT_DB_START_TIMEOUT sets how long to "
            "wait.") in output, output
    assert "secret" not in output, "the password leaked into the log"
    assert took < 15, f"took {took:.1f} s to give up"


# --- slowloris --------------------------------------------------------------------------------

SLOW_CLIENTS = 200
HANDSHAKE_TIMEOUT = 3  # CHAT_HANDSHAKE_TIMEOUT of the attacked server


class Slowloris:
    """Many TCP connections that trickle request headers and never send the final CRLF."""

    def __init__(self, port, count, interval=0.5):
        self.port, self.interval = port, interval
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
        self.started = time.monotonic()
        self.closed_after = {}  # index -> seconds until the server ended the connection
        for sock in self.socks:
            sock.sendall(f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        self.greenlets = [gevent.spawn(self._trickle)] + [
            gevent.spawn(self._wait_closed, i, sock) for i, sock in enumerate(self.socks)]

    def _trickle(self):
        for n in itertools.count():
            gevent.sleep(self.interval)
            for i, sock in enumerate(self.socks):
                if i not in self.closed_after:
                    try:
                        sock.sendall(f"X-Slow-{n}: still coming\r\n".encode())
                    except OSError:
                        pass  # closed: _wait_closed records when

    def _wait_closed(self, i, sock):
        sock.settimeout(60)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass  # a reset ends it too
        self.closed_after[i] = time.monotonic() - self.started

    def wait_all_closed(self, timeout):
        deadline = time.monotonic() + timeout
        while len(self.closed_after) < len(self.socks) and time.monotonic() < deadline:
            gevent.sleep(0.1)
        return sorted(self.closed_after.values())

    def stop(self):
        gevent.killall(self.greenlets)
        for sock in self.socks:
            sock.close()


def test_slowloris_holds_no_worker_and_its_connections_are_dropped_after_the_timeout(
        start_server, pair_in_room, make_users, measurements):
    server = start_server(CHAT_HANDSHAKE_TIMEOUT=HANDSHAKE_TIMEOUT)
    attack = Slowloris(server.port, SLOW_CLIENTS)
    try:
        room, a, b = pair_in_room(server, prefix="loris")  # connect and upgrade meanwhile
        latencies = []
        for n in range(20):
            sent = time.perf_counter()
            send(a, type="send", room=room, body=f"through the loris {n}", ref=f"l{n}")
            [message] = collect_messages(b, 1, timeout=10)
            latencies.append(time.perf_counter() - sent)
            assert message["body"] == f"through the loris {n}"
        assert len(attack.closed_after) == 0, "a slow client was dropped before the timeout"
        closed = attack.wait_all_closed(HANDSHAKE_TIMEOUT + 15)
    finally:
        attack.stop()
    latencies.sort()
    measurements["slowloris: chat latency under 200 slow clients, median / max ms"] = (
        round(latencies[len(latencies) // 2] * 1000, 1), round(latencies[-1] * 1000, 1))
    measurements["slowloris: slow clients dropped after, first / last s"] = (
        round(closed[0], 1) if closed else None, round(closed[-1], 1) if closed else None)
    assert latencies[len(latencies) // 2] < 0.2 and latencies[-1] < 1.0, latencies
    assert len(closed) == SLOW_CLIENTS, f"{SLOW_CLIENTS - len(closed)} slow clients still open"
    assert HANDSHAKE_TIMEOUT - 0.5 < closed[0] and closed[-1] < HANDSHAKE_TIMEOUT + 10, closed


# --- sockets dropped without a close frame ----------------------------------------------------

DROPPED = 2000
DROP_USERS = 20  # each with its own room: no presence fan-out between the dropped sockets
SETTLE_TIMEOUT = 60  # seconds the worker gets to notice 2,000 dead peers and clean up
SLACK = 3  # greenlets or file descriptors that may come and go on their own (timers, logs)


def masked_text(payload):
    """A masked client text frame (RFC 6455 5.3), zero key: the payload goes as is."""
    head = struct.pack("!BB", 0x81, 0x80 | 126) + struct.pack("!H", len(payload)) \
        if len(payload) > 125 else struct.pack("!BB", 0x81, 0x80 | len(payload))
    return head + b"\0\0\0\0" + payload


def open_joined(port, key, room):
    """Open a raw socket, upgrade it and send a join: handshake and frame in one write."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((
        f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nCookie: sessionid={key}\r\n\r\n").encode()
        + masked_text(json.dumps({"type": "join", "room": room}).encode()))
    return sock


def wait_joined(sock):
    data = b""
    while b'"joined"' not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before joined: {data[:200]!r}"
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data[:200]


class Census:
    """What one worker holds: greenlets and sessions (its _census hook), fds, DB connections."""

    def __init__(self, server, probe, database_url):
        self.server, self.probe, self.database_url = server, probe, database_url

    def take(self):
        send(self.probe, type="_census", ref="census")
        answer = receive_type(self.probe, "_census", timeout=30)
        pid = answer["pid"]
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           [f"chat:{pid}"])
            [database] = cursor.fetchone()
        conn.close()
        return {"greenlets": answer["greenlets"], "sessions": answer["sessions"],
                "fds": len(os.listdir(f"/proc/{pid}/fd")), "database": database}


def sockets(counts):
    """File descriptors besides the pooled database connections (the pool fills up under load)."""
    return counts["fds"] - counts["database"]


def test_sockets_dropped_without_a_close_frame_leave_nothing_behind(
        start_server, make_users, make_room, database_url, measurements):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < DROPPED + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, DROPPED + 1000), hard))
    server = start_server(CHAT_MAX_BLOCKING_TIME=2)  # the census walks the heap on the hub
    users = make_users(DROP_USERS, prefix="dropped")
    rooms = [make_room() for _ in users]
    [(_, probe_key)] = make_users(1, prefix="census")
    census = Census(server, connect(server, probe_key, timeout=30), database_url)
    [worker] = server.worker_pids()
    before = census.take()

    started = time.monotonic()
    socks = [open_joined(server.port, users[i % DROP_USERS][1], rooms[i % DROP_USERS])
             for i in range(DROPPED)]
    for sock in socks:
        wait_joined(sock)
    opened_in = time.monotonic() - started
    during = census.take()
    assert during["sessions"] == before["sessions"] + DROPPED, during

    for i, sock in enumerate(socks):  # no close frame: half end TCP with FIN, half with RST
        if i % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    dropped_at = time.monotonic()
    deadline = dropped_at + SETTLE_TIMEOUT
    while True:
        after = census.take()
        settled = (after["sessions"] == before["sessions"]
                   and after["greenlets"] <= before["greenlets"] + SLACK
                   and sockets(after) <= sockets(before) + SLACK)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(1)
    settled_in = time.monotonic() - dropped_at
    measurements["dropped sockets: 2,000 opened and joined in, s"] = round(opened_in, 1)
    measurements["dropped sockets: before / with 2,000 / after"] = (before, during, after)
    measurements["dropped sockets: back to baseline in, s"] = round(settled_in, 1)
    assert server.worker_pids() == [worker], "the worker was replaced"
    assert after["sessions"] == before["sessions"], (before, after)
    assert after["greenlets"] <= before["greenlets"] + SLACK, (before, after)
    assert sockets(after) <= sockets(before) + SLACK, (before, after)
    # Socket work borrows from the worker's pool: never more than CHAT_DB_CONCURRENCY (5 here).
    assert after["database"] <= 5, (before, after)
    assert opened_in < 50, f"opening {DROPPED} sockets took {opened_in:.0f} s"
