"""Storm control: handshake admission (chat/admission.py), the drain on stop (chat/shutdown.py)
and the load client that comes back after a restart (loadtest.py --reconnect)."""
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import gevent
import pytest
from django.core.management import call_command

from chat import shutdown
from chat.admission import Admission
from tests.live import BASE_DIR, close_reason, connect, join, receive, send


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# --- admission, with an injected clock ---

def test_admission_takes_the_burst_then_refuses_with_a_retry_after_in_range():
    clock = Clock()
    admission = Admission(rate=10, burst=3, in_flight=100, max_retry_after=10, clock=clock)
    tickets = [admission.enter() for _ in range(3)]
    assert all(callable(ticket) for ticket in tickets)
    refusals = [admission.enter() for _ in range(50)]
    assert all(isinstance(wait, int) and 1 <= wait <= 10 for wait in refusals)
    assert max(refusals) > 1  # fifty refused in a moment are spread over seconds, not all told 1
    clock.now += 0.15  # one token back at 10 a second (and a half)
    assert callable(admission.enter())
    assert not callable(admission.enter())


def test_admission_holds_at_most_in_flight_until_a_socket_is_set_up():
    admission = Admission(rate=1000, burst=1000, in_flight=2, clock=Clock())
    first, second = admission.enter(), admission.enter()
    assert callable(first) and callable(second)
    assert admission.enter() in range(1, 11)
    first()
    first()  # releasing twice (joined, then the handshake's end) frees one slot only
    assert admission.in_flight == 1
    assert callable(admission.enter())
    assert not callable(admission.enter())


def test_a_draining_worker_refuses_every_handshake_for_a_second_or_two():
    admission = Admission(rate=1000, burst=1000, in_flight=1000, clock=Clock())
    admission.draining = True
    assert {admission.enter() for _ in range(100)} <= {1, 2}


# --- the drain, with fake sessions and an injected clock ---

class FakeSession:
    def __init__(self, closing=False):
        self.closing, self.closed = closing, None

    def close(self, code, reason="", farewell=None):
        self.closing, self.closed = True, (code, reason, farewell)


def test_drain_closes_in_paced_batches_each_after_a_reconnect_hint():
    clock, closed_at = Clock(), []
    sessions = [FakeSession() for _ in range(40)]
    already = FakeSession(closing=True)  # closing for another reason: left alone

    def sleep(seconds):
        closed_at.append(sum(s.closed is not None for s in sessions))
        clock.now += seconds

    began = clock.now
    shutdown.drain([*sessions[:20], already, *sessions[20:]], 1001, "server going away", rate=100,
                   handshake_rate=20, sleep=sleep, clock=clock)
    assert already.closed is None
    assert [s.closed[:2] for s in sessions] == [(1001, "server going away")] * 40
    hints = [json.loads(s.closed[2][2:]) for s in sessions]  # a text frame of under 126 bytes
    assert {hint["type"] for hint in hints} == {"reconnect"}
    # 41 sockets over a replacement admitting 20 a second: back within 1 to 1 + 41/20 s.
    assert all(1.0 <= hint["after"] <= 1.0 + 41 / 20 for hint in hints)
    assert len({hint["after"] for hint in hints}) > 10
    assert closed_at == [5, 10, 15, 20, 24, 29, 34, 39]  # batches of 5 (100 a second, every 50 ms)
    assert clock.now - began == pytest.approx(0.4)


def test_drain_budget_leaves_the_last_clients_time_to_answer_their_close():
    assert shutdown.drain_budget(graceful_timeout=10, close_timeout=5) == 4
    assert shutdown.drain_budget(graceful_timeout=3, close_timeout=5) == 1


# --- against gunicorn ---

def test_stop_drains_in_batches_and_tells_each_socket_when_to_come_back(start_server, make_users):
    doomed = start_server(CHAT_DRAIN_RATE="4", CHAT_HANDSHAKE_RATE="5")
    clients = [connect(doomed, key) for _, key in make_users(6, prefix="drained")]
    for ws in clients:
        send(ws, type="ping")
        assert receive(ws)["type"] == "pong"
    doomed.process.send_signal(signal.SIGTERM)
    results = {}

    def read(n, ws):
        hint = receive(ws, timeout=10)
        results[n] = (hint, close_reason(ws, timeout=10), time.monotonic())

    gevent.joinall([gevent.spawn(read, n, ws) for n, ws in enumerate(clients)], timeout=20, raise_error=True)
    assert [results[n][1] for n in range(6)] == [(1001, "server going away")] * 6
    for hint, _, _ in results.values():
        assert hint["type"] == "reconnect" and 1.0 <= hint["after"] <= 1.0 + 6 / 5
    closes = sorted(at for _, _, at in results.values())
    assert closes[-1] - closes[0] > 0.75  # 4 a second: six closes span over a second, not one instant
    doomed.process.wait(15)
    assert "closing 6 sockets with 1001, 4 a second" in doomed.log()


def raw_handshake(server, key=None):
    """Send a WebSocket handshake; return the response head (the socket is closed)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        cookie = f"Cookie: sessionid={key}\r\n" if key else ""
        sock.sendall((f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\n{cookie}\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.decode("latin-1")


def test_over_the_handshake_rate_the_answer_is_503_with_retry_after_and_pages_still_answer(
        start_server, make_users):
    busy = start_server(CHAT_HANDSHAKE_RATE="0.2", CHAT_HANDSHAKE_BURST="1", CHAT_RETRY_AFTER_MAX="5")
    [(_, key)] = make_users(1, prefix="admitted")
    first = connect(busy, key)  # the burst's one token
    head = raw_handshake(busy, key)
    status, headers = head.split("\r\n", 1)
    assert status == "HTTP/1.1 503 Service Unavailable"
    retry_after = int(next(line.split(":", 1)[1] for line in headers.split("\r\n")
                           if line.lower().startswith("retry-after:")))
    assert 1 <= retry_after <= 5
    assert "connection: close" in headers.lower()
    for _ in range(3):  # pages are never refused by the admission
        assert urllib.request.urlopen(busy.url + "/accounts/login/", timeout=10).status == 200
    send(first, type="ping")
    assert receive(first)["type"] == "pong"  # the open socket is untouched


def test_handshakes_past_the_in_flight_cap_get_503_until_the_first_has_joined(
        start_server, make_users, make_room):
    # One database connection, held by a _sleep: the next handshake waits in its session read,
    # between the upgrade and its registration, and so holds the one slot in flight.
    busy = start_server(CHAT_HANDSHAKES_IN_FLIGHT="1", CHAT_DB_CONCURRENCY="1",
                        CHAT_SESSION_CACHE_TTL="0")
    room = make_room()
    (_, sleeper_key), (_, waiting_key), (_, third_key) = make_users(3, prefix="inflight")
    sleeper = connect(busy, sleeper_key)
    join(sleeper, room)  # set up: its slot is free
    send(sleeper, type="_sleep", seconds=3)
    gevent.sleep(0.5)
    waiting = gevent.spawn(connect, busy, waiting_key)
    gevent.sleep(0.5)
    assert raw_handshake(busy, third_key).startswith("HTTP/1.1 503 ")
    assert receive(sleeper, timeout=10)["type"] == "_slept"
    ws = waiting.get(timeout=10)
    send(ws, type="ping")
    assert receive(ws)["type"] == "pong"
    assert raw_handshake(busy, third_key).startswith("HTTP/1.1 503 ")  # registered, not joined
    join(ws, room)
    assert raw_handshake(busy, third_key).startswith("HTTP/1.1 101 ")  # joined: set up


@pytest.fixture(scope="module")
def storm_server(start_server, django_db_blocker):
    with django_db_blocker.unblock():
        call_command("create_load_users", "--count", "6", "--rooms", "1", "--prefix", "st")
    return start_server(WEB_CONCURRENCY="2", CHAT_RATE_LIMIT="1000", CHAT_RATE_BURST="1000")


def test_the_load_client_resumes_after_a_reload_with_nothing_lost_or_twice(storm_server, tmp_path):
    ready, out = tmp_path / "ready.json", tmp_path / "result.json"
    command = [sys.executable, str(BASE_DIR / "loadtest.py"), "--url", storm_server.url, "--prefix", "st",
               "--sessions", str(tmp_path / "sessions.json"), "--users", "24", "--senders", "3",
               "--accounts", "6", "--rate", "15", "--duration", "8", "--ramp", "1", "--reconnect",
               "--ready-file", str(ready), "--drain", "20", "--json", str(out), "--quiet"]
    load = subprocess.Popen(command, cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and load.poll() is None:
        time.sleep(0.1)
    assert ready.exists(), load.stdout.read() if load.poll() is not None else "loadtest never got ready"
    time.sleep(2.5)  # messages flowing
    old_workers = set(storm_server.worker_pids())
    storm_server.process.send_signal(signal.SIGHUP)
    output, _ = load.communicate(timeout=90)
    assert load.returncode == 0, output
    result = json.loads(out.read_text())
    assert not old_workers & set(storm_server.worker_pids()), "the reload replaced no worker"
    assert result["sockets"]["opened"] == 24
    assert result["closes"] == {"1001": 24}
    comeback = result["reconnect"]
    assert (comeback["reconnects"], comeback["hints"], comeback["not_back"], comeback["resets"]) == (24, 24, 0, 0)
    assert result["sent"] == 15 * 8 and result["acked"] == result["sent"]
    assert (result["lost"], result["duplicates"], result["gaps"], result["errors"]) == (0, 0, 0, {})
    assert result["by_send"] == {"undelivered": 0, "extra": 0}
    assert result["deliveries"] == 15 * 8 * 24
