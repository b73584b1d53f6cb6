"""Process-wide facts of the server: shutdown, keep-alive, several instances, the embedded database."""
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.live import BASE_DIR, Gunicorn, close_code, connect, receive, send


def test_sigterm_closes_every_socket_with_1001_and_the_worker_exits(start_server, make_users):
    doomed = start_server()
    users = make_users(5, prefix="doomed")
    clients = [connect(doomed, key) for _, key in users]
    for ws in clients:
        send(ws, type="ping")
        assert receive(ws)["type"] == "pong"
    started = time.monotonic()
    doomed.process.send_signal(signal.SIGTERM)
    codes = [close_code(ws, timeout=5) for ws in clients]
    first_close = time.monotonic() - started
    assert codes == [1001] * 5
    assert first_close < 2
    doomed.process.wait(15)
    assert doomed.process.returncode == 0
    # Each session's finally ran: it logs the close code it saw.
    assert doomed.log().count(" code=1001\n") == 5, doomed.log()


@pytest.fixture(scope="module")
def keepalive_server(start_server):
    return start_server(CHAT_PING_INTERVAL="0.3", CHAT_IDLE_TIMEOUT="1.2")


def test_server_pings_and_drops_a_silent_peer(keepalive_server, make_users):
    [(_, key)] = make_users(1, prefix="silent")
    sock = socket.create_connection(("127.0.0.1", keepalive_server.port), timeout=10)
    sock.sendall((
        f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{keepalive_server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Cookie: sessionid={key}\r\n\r\n").encode())
    data = b""
    started = time.monotonic()
    while True:
        chunk = sock.recv(4096)
        assert chunk, "closed without a close frame"
        data += chunk
        frames = data.split(b"\r\n\r\n", 1)[1]
        if b"\x88" in frames:  # a close frame: FIN + opcode 8
            break
    silent_for = time.monotonic() - started
    assert b"\x89\x00" in frames, "no ping frame before the close"
    code = struct.unpack("!H", frames[frames.index(b"\x88") + 2:][:2])[0]
    assert code == 1001
    assert 1.0 < silent_for < 5


def test_a_peer_that_answers_pings_stays_connected(keepalive_server, make_users):
    [(_, key)] = make_users(1, prefix="lively")
    ws = connect(keepalive_server, key)
    deadline = time.monotonic() + 3
    ws.settimeout(0.2)
    while time.monotonic() < deadline:  # websocket-client answers pings while it reads
        try:
            ws.recv()
        except Exception as error:  # a read timeout is expected; a close is not
            assert "timed out" in str(error), error
    send(ws, type="ping", ref="still")
    assert receive(ws) == {"type": "pong", "ref": "still"}
    ws.close()


def test_two_instances_run_side_by_side(start_server, server):
    other = start_server()
    for instance in (server, other):
        assert urllib.request.urlopen(instance.url + "/accounts/login/", timeout=10).status == 200


def test_embedded_database_is_started_migrated_shared_and_stopped(tmp_path, measurements):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["CHAT_PGDATA"] = str(tmp_path / "pgdata")
    instance = Gunicorn("", tmp_path, CHAT_PGDATA=env["CHAT_PGDATA"])
    instance.env.pop("DATABASE_URL")
    started = time.monotonic()
    instance.start()
    measurements["embedded PostgreSQL: first start with initdb, seconds"] = round(
        time.monotonic() - started, 1)
    try:
        assert (tmp_path / "pgdata" / "postmaster.pid").exists()
        # manage.py attaches to the running server and sees the migrated lobby of tables.
        shell = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c",
             "from django.contrib.auth.models import User; print('users', User.objects.count())"],
            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
        assert shell.returncode == 0, shell.stderr
        assert "users 0" in shell.stdout
        assert (tmp_path / "pgdata" / "postmaster.pid").exists(), "manage.py stopped the server"
    finally:
        assert instance.stop() == 0
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists(), "PostgreSQL still runs"


def test_unix_socket_bind_survives_several_closing_sockets(start_server, make_users, tmp_path):
    """gevent-websocket 0.10.1 keyed clients by address, '' for every Unix-socket client."""
    import websocket

    path = tmp_path / "chat.sock"
    users = make_users(3, prefix="unix")
    unix = start_server(CHAT_BIND=f"unix:{path}")
    clients = []
    for _, key in users:
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(10)
        raw.connect(str(path))
        clients.append(websocket.create_connection("ws://localhost/ws/", socket=raw, timeout=10,
                                                   header={"cookie": f"sessionid={key}"}))
    for ws in clients:
        send(ws, type="ping")
        assert receive(ws)["type"] == "pong"
    for ws in clients:
        ws.close()
    time.sleep(0.5)
    assert "KeyError" not in unix.log() and "Traceback" not in unix.log(), unix.log()
