"""loadtest.py and create_load_users: against a real gunicorn, and the client's own parts."""
import json
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from chat.models import Room
from chatload import report, wire
from chatload.user import Tally
from tests.live import BASE_DIR

LOADTEST = [sys.executable, str(BASE_DIR / "loadtest.py")]


@pytest.fixture(scope="module")
def load_accounts(django_db_blocker):
    """Load accounts lt1..lt8 (password as default) and rooms lt-1, lt-2."""
    with django_db_blocker.unblock():
        call_command("create_load_users", "--count", "8", "--rooms", "2", "--prefix", "lt")


@pytest.fixture(scope="module")
def load_server(start_server, load_accounts):
    """A gunicorn for the load accounts."""
    return start_server(CHAT_RATE_LIMIT=1000, CHAT_RATE_BURST=1000)


def run_loadtest(server, tmp_path, *options, timeout=120):
    out = tmp_path / "result.json"
    command = [*LOADTEST, "--url", server.url, "--prefix", "lt", "--sessions", str(tmp_path / "sessions.json"),
               "--json", str(out), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=BASE_DIR)
    return done, (json.loads(out.read_text()) if out.exists() else None)


def test_loadtest_delivers_every_message_to_every_socket_once(load_server, tmp_path):
    done, result = run_loadtest(load_server, tmp_path, "--users", "30", "--rooms", "2", "--senders", "4",
                                "--accounts", "8", "--rate", "20", "--duration", "2", "--ramp", "1",
                                "--server-pid", str(load_server.process.pid), "--plot", str(tmp_path / "p.png"))
    assert done.returncode == 0, done.stderr
    assert result["sockets"]["opened"] == 30 and result["sockets"]["failed"] == {}
    assert result["sent"] == 40 and result["acked"] == 40
    assert result["deliveries"] == 40 * 15  # each room: 20 messages to its 15 sockets
    assert (result["lost"], result["duplicates"], result["gaps"], result["errors"]) == (0, 0, 0, {})
    assert result["steps"][0]["delivery_ratio"] == 1 and result["steps"][0]["passed"] is True
    assert result["server"]["cpu_s"] > 0 and result["server"]["rss_open_kib"] > 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "delivered 600; latency p50" in done.stdout


@pytest.fixture(scope="module")
def http_load_server(start_server, load_accounts):
    """Two workers, so that a user's requests may reach either (no sticky sessions)."""
    return start_server(WEB_CONCURRENCY=2, CHAT_RATE_LIMIT=1000, CHAT_RATE_BURST=1000,
                        CHAT_HTTP_REQUEST_RATE=1000, CHAT_HTTP_REQUEST_BURST=1000)


def test_loadtest_over_http_delivers_every_message_once_on_two_workers(http_load_server, tmp_path):
    done, result = run_loadtest(http_load_server, tmp_path, "--transport", "http", "--users", "30",
                                "--rooms", "2", "--senders", "4", "--accounts", "8", "--rate", "20",
                                "--duration", "2", "--ramp", "1", "--server-pid", str(http_load_server.process.pid))
    assert done.returncode == 0, done.stderr
    assert result["config"]["transport"] == "http"
    assert result["sockets"]["opened"] == 30 and result["sockets"]["failed"] == {}
    assert result["sent"] == 40 and result["acked"] == 40
    assert result["deliveries"] == 40 * 15  # each room: 20 messages to its 15 users
    assert (result["lost"], result["duplicates"], result["gaps"], result["reordered"]) == (0, 0, 0, 0)
    assert (result["errors"], result["closes"]) == ({}, {})
    assert result["by_send"] == {"undelivered": 0, "extra": 0}
    assert result["steps"][0]["delivery_ratio"] == 1 and result["steps"][0]["passed"] is True
    http = result["http"]
    assert (http["failed"], http["throttled"], http["bad_n"]) == (0, 0, 0)
    assert http["applied"] >= 30 and http["events"] >= 600 + 30  # every delivery and each joined
    assert http["requests"] >= http["applied"] + http["stale"]
    assert result["server"]["cpu_s"] > 0
    assert "delivered 600; latency p50" in done.stdout
    assert f"http      {http['requests']} requests, {http['applied']} answers applied" in done.stdout


def test_loadtest_over_http_refuses_peers_without_a_login(tmp_path):
    done = subprocess.run([*LOADTEST, "--transport", "http", "--no-login"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "--transport http speaks this project's protocol with a login: not with --no-login" in done.stderr


def test_loadtest_reuses_saved_sessions_instead_of_logging_in_again(load_server, tmp_path):
    options = ("--users", "4", "--senders", "1", "--accounts", "2", "--rate", "5", "--duration", "1", "--ramp", "0")
    first, _ = run_loadtest(load_server, tmp_path, *options)
    logins = load_server.log().count("POST /accounts/login/")
    second, result = run_loadtest(load_server, tmp_path, *options)
    assert first.returncode == second.returncode == 0, second.stderr
    assert load_server.log().count("POST /accounts/login/") == logins
    assert result["sockets"]["opened"] == 4 and result["lost"] == 0


def test_loadtest_steps_stop_after_the_first_failing_step(load_server, tmp_path):
    done, result = run_loadtest(load_server, tmp_path, "--users", "4", "--senders", "2", "--accounts", "2",
                                "--rate", "10,20,40", "--duration", "1", "--pause", "0.5", "--ramp", "0",
                                "--max-p99", "0.001")
    assert done.returncode == 0, done.stderr
    assert [step["passed"] for step in result["steps"]] == [False, None, None]
    assert [step["sent"] for step in result["steps"]][1:] == [0, 0]
    assert "step 1 (10/s) failed: no further steps" in done.stderr


def test_loadtest_steps_go_on_while_they_pass(load_server, tmp_path):
    done, result = run_loadtest(load_server, tmp_path, "--users", "6", "--senders", "2", "--accounts", "2",
                                "--rate", "10,20", "--duration", "1", "--pause", "0.5", "--ramp", "0",
                                "--max-p99", "5000", "--min-delivery", "0.95")
    assert done.returncode == 0, done.stderr
    assert [(step["sent"], step["delivered"], step["passed"]) for step in result["steps"]] == [
        (10, 60, True), (20, 120, True)]


def test_loadtest_procs_merge_their_results(load_server, tmp_path):
    done, result = run_loadtest(load_server, tmp_path, "--users", "12", "--senders", "2", "--accounts", "4",
                                "--rate", "10", "--duration", "1", "--ramp", "0", "--procs", "2")
    assert done.returncode == 0, done.stderr
    assert result["sockets"]["opened"] == 12 and result["sent"] == 10
    assert result["deliveries"] == 10 * 12 and result["lost"] == 0 and result["duplicates"] == 0


def test_loadtest_merges_tallies_of_machines_started_together(load_server, tmp_path):
    import time

    at = str(time.time() + 4)
    machines = [subprocess.Popen([*LOADTEST, "--url", load_server.url, "--prefix", "lt", "--users", "6",
                                  "--senders", "2", "--accounts", "2", "--rate", "10", "--duration", "1",
                                  "--ramp", "0", "--epoch-at", at, "--sessions", str(tmp_path / "sessions.json"),
                                  "--tally", str(tmp_path / f"m{n}.json")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=BASE_DIR)
                for n in (1, 2)]
    for machine in machines:
        assert machine.wait(timeout=60) == 0, machine.stderr.read()
    merged = subprocess.run([*LOADTEST, "--merge", str(tmp_path / "m1.json"), str(tmp_path / "m2.json"),
                             "--rate", "10", "--duration", "1", "--users", "12", "--json", str(tmp_path / "all.json")],
                            capture_output=True, text=True, timeout=60, cwd=BASE_DIR)
    assert merged.returncode == 0, merged.stderr
    result = json.loads((tmp_path / "all.json").read_text())
    # Both machines' 12 sockets are in room lt-1 and each machine sent 10: 20 x 12 deliveries.
    assert result["sent"] == 20 and result["deliveries"] == 240 and result["sockets"]["opened"] == 12
    assert result["lost"] == 0 and result["duplicates"] == 0 and result["steps"][0]["delivery_ratio"] == 1


def test_loadtest_wrong_password_says_what_to_do(load_server, tmp_path):
    done, _ = run_loadtest(load_server, tmp_path, "--users", "2", "--senders", "1", "--password", "nope")
    assert done.returncode != 0
    assert "lt1: the login form answered 200: wrong --password, or run `manage.py create_load_users`" in done.stderr


def test_loadtest_refuses_more_senders_than_accounts(tmp_path):
    done = subprocess.run([*LOADTEST, "--users", "5", "--senders", "6"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--senders must not exceed --users or --accounts" in done.stderr


@pytest.mark.django_db
def test_create_load_users_shares_one_hash_and_is_repeatable():
    call_command("create_load_users", "--count", "5", "--rooms", "3", "--prefix", "cl", "--password", "a")
    call_command("create_load_users", "--count", "6", "--rooms", "3", "--prefix", "cl", "--password", "b")
    users = get_user_model().objects.filter(username__startswith="cl")
    assert users.count() == 6 and len({user.password for user in users}) == 1
    assert users.get(username="cl1").check_password("b")
    assert list(Room.objects.filter(slug__startswith="cl-").values_list("slug", flat=True)) == ["cl-1", "cl-2", "cl-3"]
    call_command("create_load_users", "--count", "1", "--prefix", "cl", "--delete")
    assert not users.all().exists() and not Room.objects.filter(slug__startswith="cl-").exists()


def test_parse_takes_whole_frames_and_leaves_the_rest():
    big = b"x" * 70000
    stream = bytearray(b"\x81\x02hi" + b"\x81\x7e" + (300).to_bytes(2, "big") + b"y" * 300
                       + b"\x81\x7f" + len(big).to_bytes(8, "big") + big + b"\x88\x02\x03")
    frames = wire.parse(stream)
    assert [(first, len(payload)) for first, payload in frames] == [(0x81, 2), (0x81, 300), (0x81, 70000)]
    assert stream == b"\x88\x02\x03"  # an incomplete close frame waits for more bytes
    with pytest.raises(wire.Closed) as closed:
        wire.parse(bytearray(b"\x81\x82abcdxy"))
    assert closed.value.code == 1002


def test_client_frames_are_masked():
    for payload in (b"", b"a", b"hello", b"z" * 200, b"q" * 70000):
        data = wire.frame(wire.OP_TEXT, payload)
        start = 2 + {126: 2, 127: 8}.get(data[1] & 0x7F, 0)
        assert data[1] & 0x80
        mask, body = data[start:start + 4], data[start + 4:]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload


@pytest.mark.parametrize("payload", [
    b'{"type":"message","ref":"r.1","room":"a","seq":7,"body":"lt 12.500000 xx"}',
    b'42["message",{"type": "message", "room": "a", "seq": 7, "body": "lt 12.500000 xx", "ref": "r.1"}]',
])
def test_message_fields_read_both_spacings(payload):
    assert wire.message_fields(payload) == (7, 12.5, "r.1")


def test_message_fields_are_not_fooled_by_a_body():
    payload = b'{"type":"message","room":"a","seq":3,"body":"\\"seq\\":9 \\"ref\\":\\"x\\"","ref":"ok"}'
    assert wire.message_fields(payload) == (3, None, "ok")
    assert wire.message_fields(b'{"type":"joined","seq":3}') is None


def test_lost_counts_what_sockets_that_stayed_never_got():
    tally = Tally()
    tally.rooms = {"a": [2, (0 + 10) + (4 + 5), 10]}  # one socket got 1..10, one joined at 4 and got 5 of 6
    assert report.lost(tally) == 1


def test_http_connection_reads_chunked_and_sized_answers_on_one_kept_alive_connection():
    import socket as stdlib_socket
    import threading

    from chatload import httpwire

    listener = stdlib_socket.create_server(("127.0.0.1", 0))
    answers = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
               b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"]

    def serve():
        conn, _ = listener.accept()
        with conn:
            for answer in answers:
                conn.recv(65536)
                for n in range(0, len(answer), 7):  # in pieces, as a slow network hands them over
                    conn.sendall(answer[n:n + 7])

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    conn = httpwire.Connection("127.0.0.1", listener.getsockname()[1])
    head = httpwire.request_head("/http/", "127.0.0.1", 1, "sessionid=s; csrftoken=t", "t", 2)
    first = conn.post(head, b"{}", timeout=5)
    assert (first.status, first.body, conn.open) == (200, b'{"a":1}', True)
    second = conn.post(head, b"{}", timeout=5)
    assert (second.status, second.body, second.retry_after(), conn.open) == (503, b"{}", 2, False)
    server.join(5)
    listener.close()
    assert b"\r\nOrigin: http://127.0.0.1:1\r\n" in head
    assert head.endswith(b"\r\nCookie: sessionid=s; csrftoken=t\r\nX-CSRFToken: t\r\n\r\n")
