"""Faults the server survives, each against a real gunicorn (README.md, "Faults it survives").

The database stopped mid-conversation and back, the database absent at start, slowloris
clients, and thousands of sockets dropped without a close frame.
"""
import itertools
import os
import socket
import subprocess
import sys
import time

import gevent

from tests.live import BASE_DIR, collect_messages, free_port, send

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
