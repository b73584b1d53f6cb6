"""Faults the server survives, each against a real gunicorn (README.md, "Faults it survives").

The database stopped mid-conversation and back, the database absent at start, slowloris
clients, and thousands of sockets dropped without a close frame.
"""
import itertools
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent
import psycopg2
import pytest

from tests.live import (BASE_DIR, Gunicorn, collect_messages, connect, free_port, join, receive,
                        on_worker, receive_type, send)

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
    # The census walks the heap on the hub; each user holds many of the dropped sockets.
    server = start_server(CHAT_MAX_BLOCKING_TIME=2, CHAT_SOCKETS_PER_USER=DROPPED)
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


# --- PostgreSQL stopped and started under a running server ------------------------------------

MAKE_SESSIONS = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
for name in ("alice", "bob", "carol"):
    user = get_user_model().objects.create_user(name)
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    print(store.session_key)
"""
RECOVERY_TIMEOUT = 30  # seconds the server gets to serve sends again once PostgreSQL is back
OUTAGE = 7  # seconds PostgreSQL stays down: the listener's retries reach their longest delay


class OwnPostgres:
    """A PostgreSQL of this test's own (pgserver's binaries), to stop and start at will."""

    def __init__(self, pgdata):
        import pgserver

        from project import embedded

        self.server = pgserver.get_server(pgdata, cleanup_mode=None)
        embedded.create_database(self.server, "chat")
        self.pgdata, self.url = pgdata, self.server.get_uri("chat")
        self.socket_dir = self.server.get_postmaster_info().socket_dir

    def manage(self, *args):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, timeout=120,
                                env={**os.environ, "DATABASE_URL": self.url},
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def pg_ctl(self, *args):
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def stop(self):
        self.pg_ctl("-m", "fast", "stop")  # disconnects every client at once

    def start(self):
        # As pgserver starts it: no TCP, the same Unix-socket directory, so the same URL.
        self.pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"),
                    "start")

    def query(self, sql, params=()):
        with psycopg2.connect(self.url) as conn, conn.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        conn.close()
        return rows


@pytest.fixture
def own_postgres():
    """Not in tmp_path: every pytest run that starts chmods /tmp/pytest-of-<user> to 0700,
    and PostgreSQL (run as the user pgserver when we are root) could not restart in it."""
    top = Path(tempfile.mkdtemp(prefix="chat-faults-"))
    pg = OwnPostgres(top / "pgdata")
    yield pg
    try:
        pg.stop()
    except subprocess.CalledProcessError:
        pass  # already stopped by a failed test
    shutil.rmtree(top, ignore_errors=True)


def send_until_acknowledged(ws, room, prefix, timeout):
    """Send new refs every half second until one is acknowledged; return (acked, errors)."""
    deadline, errors = time.monotonic() + timeout, []
    for n in itertools.count():
        assert time.monotonic() < deadline, f"no send acknowledged in {timeout} s: {errors[-3:]}"
        send(ws, type="send", room=room, body=f"{prefix} {n}", ref=f"{prefix}-{n}")
        event = receive(ws, timeout=max(1, deadline - time.monotonic()))
        while event["type"] not in ("message", "error"):
            event = receive(ws, timeout=max(1, deadline - time.monotonic()))
        if event["type"] == "message":
            return event, errors
        errors.append(event)
        time.sleep(0.5)


def test_postgres_stopped_mid_conversation_errors_then_recovers_by_itself_losing_nothing(
        own_postgres, gunicorn_logs, measurements):
    own_postgres.manage("migrate", "--noinput", "-v", "0")
    alice, bob, carol = own_postgres.manage("shell", "--no-imports", "-c", MAKE_SESSIONS).split()
    server = Gunicorn(own_postgres.url, gunicorn_logs, WEB_CONCURRENCY=2, CHAT_BROKER="postgres",
                      CHAT_DB_WAIT_TIMEOUT=5).start()
    try:
        workers = sorted(server.worker_pids())
        a, b = on_worker(server, alice, workers[0]), on_worker(server, bob, workers[1])
        join(a, "lobby")
        join(b, "lobby")
        acknowledged = []
        for n in range(3):
            send(a, type="send", room="lobby", body=f"before {n}", ref=f"before-{n}")
            acknowledged.append(collect_messages(a, 1)[0])
        collect_messages(b, 3)

        own_postgres.stop()
        stopped = time.monotonic()
        for n in range(3):
            send(a, type="send", room="lobby", body=f"during {n}", ref=f"during-{n}")
            error = receive_type(a, "error", timeout=15)
            assert error["code"] == "server_error" and error["ref"] == f"during-{n}", error
        send(a, type="ping", ref="alive")
        assert receive_type(a, "pong") == {"type": "pong", "ref": "alive"}
        assert sorted(server.worker_pids()) == workers, "a worker died with the database"
        time.sleep(max(0, stopped + OUTAGE - time.monotonic()))

        own_postgres.start()
        restarted = time.monotonic()
        message, errors = send_until_acknowledged(a, "lobby", "after", RECOVERY_TIMEOUT)
        recovered_in = time.monotonic() - restarted
        acknowledged.append(message)
        # The other socket hears of it live: its worker's LISTEN connection came back too.
        [heard] = [m for m in collect_messages(b, 1, timeout=RECOVERY_TIMEOUT, errors=[])
                   if m["ref"] == message["ref"]]
        heard_in = time.monotonic() - restarted
        for n in range(3):
            send(a, type="send", room="lobby", body=f"later {n}", ref=f"later-{n}")
            acknowledged.append(collect_messages(a, 1)[0])
        assert sorted(server.worker_pids()) == workers, "a worker died with the database"

        refs = [m["ref"] for m in acknowledged]
        stored = dict(own_postgres.query(
            "SELECT ref, body FROM chat_message WHERE ref = ANY(%s)", [refs]))
        assert sorted(stored) == sorted(refs), "an acknowledged message is not in the database"
        c = connect(server, carol)
        since = {m["ref"] for m in join(c, "lobby", since=0)["messages"]}
        assert set(refs) <= since, f"missing from join since: {set(refs) - since}"
        # Each worker's listener lost its connection and listens again.
        assert server.log().count("listening on chat_events") == 4, server.log()
        measurements["postgres outage: down for, s"] = round(restarted - stopped, 1)
        measurements["postgres outage: first send acknowledged after restart, s"] = round(recovered_in, 1)
        measurements["postgres outage: the other socket heard it after, s"] = round(heard_in, 1)
        measurements["postgres outage: sends refused while recovering"] = len(errors)
        for ws in (a, b, c):
            ws.close()
    finally:
        server.stop()
