"""One gunicorn serves pages and the /ws/ endpoint (PROTOCOL.md, Connection)."""
import socket
import struct
import time
import urllib.error
import urllib.request

import pytest
import websocket

from tests.live import Browser, close_code, connect, receive, send


def test_login_page_is_served_by_the_same_server(server):
    page = urllib.request.urlopen(server.url + "/accounts/login/", timeout=10).read().decode()
    assert 'name="username"' in page and 'name="password"' in page


def test_authenticated_socket_knows_its_user(server, make_users):
    [(username, key)] = make_users(1)
    ws = connect(server, key)
    send(ws, type="whoami", ref="w1")
    assert receive(ws) == {"type": "whoami", "ref": "w1", "user": username}
    send(ws, type="ping", ref="p1")
    assert receive(ws) == {"type": "pong", "ref": "p1"}
    ws.close()


def test_socket_of_a_user_signed_in_through_the_login_form(server, make_users):
    from django.contrib.auth.hashers import make_password

    [(username, _)] = make_users(1, prefix="form", password=make_password("correct horse 9"))
    browser = Browser(server)
    browser.login(username, "correct horse 9")
    ws = connect(server, browser.cookie("sessionid"))
    send(ws, type="whoami")
    assert receive(ws) == {"type": "whoami", "user": username}
    ws.close()


def test_anonymous_socket_is_closed_with_4401(server):
    ws = connect(server)
    assert close_code(ws) == 4401


def test_socket_with_an_unknown_session_is_closed_with_4401(server):
    ws = connect(server, "not-a-session-key-at-all")
    assert close_code(ws) == 4401


def test_socket_after_logout_is_closed_with_4401(server, make_users):
    from django.contrib.auth.hashers import make_password

    [(username, _)] = make_users(1, prefix="out", password=make_password("correct horse 9"))
    browser = Browser(server)
    browser.login(username, "correct horse 9")
    key = browser.cookie("sessionid")
    browser.post_form("/accounts/logout/", {}, token_page="/")
    ws = connect(server, key)
    assert close_code(ws) == 4401


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:1", "null"])
def test_foreign_origin_is_refused_with_403_before_upgrade(server, make_users, origin):
    [(_, key)] = make_users(1)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, key, origin=origin)
    assert refused.value.status_code == 403


def test_foreign_origin_is_refused_for_anonymous_users_too(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, origin="https://evil.example")
    assert refused.value.status_code == 403


@pytest.mark.parametrize("origin", ["same-host", "https://allowed.example"])
def test_same_host_and_listed_origins_are_allowed(server, make_users, origin):
    [(username, key)] = make_users(1)
    if origin == "same-host":
        origin = "https://" + server.url.split("//")[1]  # the scheme is not compared
    ws = connect(server, key, origin=origin)
    send(ws, type="whoami")
    assert receive(ws)["user"] == username
    ws.close()


def test_upgrade_headers_on_another_path_get_a_plain_response(server):
    request = urllib.request.Request(server.url + "/accounts/login/", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    response = urllib.request.urlopen(request, timeout=10)
    assert response.status == 200
    assert 'name="username"' in response.read().decode()


def test_plain_get_of_the_socket_endpoint_asks_for_an_upgrade(server):
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(server.url + "/ws/", timeout=10)
    assert answer.value.code == 426


def test_message_over_the_limit_closes_with_1009(server, make_users):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    ws.send("x" * 65537)
    assert close_code(ws) == 1009


def test_message_at_the_limit_is_read(server, make_users):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    head = '{"type":"ping","ref":"big","pad":"'
    text = head + "x" * (65536 - len(head) - 2) + '"}'
    assert len(text.encode()) == 65536
    ws.send(text)
    assert receive(ws) == {"type": "pong", "ref": "big"}
    ws.close()


def test_huge_announced_length_closes_with_1009_before_the_payload(server, make_users):
    [(_, key)] = make_users(1)
    sock = _raw_socket(server, key)
    sock.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, 2**63 - 1) + b"\x01\x02\x03\x04")
    assert _read_close_code(sock) == 1009


def test_unmasked_client_frame_closes_with_1002(server, make_users):
    [(_, key)] = make_users(1)
    sock = _raw_socket(server, key)
    payload = b'{"type":"ping"}'
    sock.sendall(struct.pack("!BB", 0x81, len(payload)) + payload)
    assert _read_close_code(sock) == 1002


def test_invalid_utf8_closes_with_1007(server, make_users):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    ws.send(b'{"type":"ping","x":"\xff\xfe"}', opcode=websocket.ABNF.OPCODE_TEXT)
    assert close_code(ws) == 1007


def test_binary_message_gets_bad_request(server, make_users):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    ws.send_binary(b'{"type":"ping"}')
    event = receive(ws)
    assert event["type"] == "error" and event["code"] == "bad_request"
    ws.close()


@pytest.mark.parametrize("text, detail", [
    ("not json", "the frame is not valid JSON"),
    ("[1, 2]", "the frame must be a JSON object"),
    ("[" * 10000, "the frame is nested too deeply"),
    ('{"ref": "r"}', "the frame has no type"),
])
def test_malformed_frames_get_bad_request_and_the_socket_stays_open(server, make_users, text, detail):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    ws.send(text)
    event = receive(ws)
    assert event["type"] == "error" and event["code"] == "bad_request"
    assert event["detail"] == detail
    send(ws, type="ping", ref="after")
    assert receive(ws) == {"type": "pong", "ref": "after"}
    ws.close()


@pytest.mark.parametrize("ref", ["", "x" * 65, 7, None])
def test_bad_ref_gets_bad_request_without_a_ref(server, make_users, ref):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    send(ws, type="ping", ref=ref)
    assert receive(ws) == {"type": "error", "code": "bad_request",
                           "detail": "ref must be a string of 1 to 64 characters"}
    ws.close()


def test_unknown_type_echoes_the_ref(server, make_users):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    send(ws, type="dance", ref="d1")
    assert receive(ws) == {"type": "error", "code": "unknown_type", "ref": "d1",
                           "detail": "unknown frame type 'dance'"}
    ws.close()


def test_access_log_shows_upgrades(server, make_users):
    [(_, key)] = make_users(1)
    ws = connect(server, key)
    send(ws, type="ping")
    receive(ws)
    ws.close()
    deadline = time.monotonic() + 10
    while '"GET /ws/ HTTP/1.1" 101' not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def _raw_socket(server, key):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall((
        "GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Cookie: sessionid=%s\r\n\r\n" % (server.port, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "connection closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _read_close_code(sock):
    """Read server frames until a close frame; return its code."""
    while True:
        first, second = _read_exactly(sock, 2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", _read_exactly(sock, 2))[0]
        elif length == 127:
            length = struct.unpack("!Q", _read_exactly(sock, 8))[0]
        payload = _read_exactly(sock, length)
        if first & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def _read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed before a close frame"
        data += chunk
    return data


def test_disallowed_host_closes_the_socket_with_1008(server, make_users):
    [(_, key)] = make_users(1)
    ws = connect(server, key, host="evil.example")
    assert close_code(ws) == 1008


# --- behind a trusted proxy, and slow bodies (chat/proxies.py, chat/worker.py) ---------------

BODY_TIMEOUT = 2  # CHAT_BODY_TIMEOUT of the edge server
CSRF_COOKIE = "csrftoken=" + "a" * 32  # any well-formed secret: the body is read before it is compared


@pytest.fixture(scope="module")
def edge(start_server):
    """A server behind a "proxy" on 127.0.0.1 that sends HSTS over HTTPS like production."""
    return start_server(CHAT_TRUSTED_PROXIES="127.0.0.1", CHAT_BODY_TIMEOUT=BODY_TIMEOUT,
                        SECURE_HSTS_SECONDS=60, CHAT_METRICS_ALLOWED="127.0.0.1")


def _get(server, path, headers=(), source="127.0.0.1", full=False):
    """GET ``path`` from the ``source`` address; return (status, body) (and the headers)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                            source_address=(source, 0))
    try:
        connection.request("GET", path, headers=dict(headers))
        response = connection.getresponse()
        answer = response.status, response.read().decode()
        return (*answer, response.headers) if full else answer
    finally:
        connection.close()


def test_a_trusted_proxy_tells_the_scheme_and_no_one_else_can(edge):
    def secure(headers, source="127.0.0.1"):
        status, _, headers = _get(edge, "/accounts/login/", headers, source, full=True)
        assert status == 200
        return "Strict-Transport-Security" in headers  # SecurityMiddleware: only if is_secure()

    assert not secure({})
    assert secure({"X-Forwarded-Proto": "https"})
    assert not secure({"X-Forwarded-Proto": "https"}, source="127.0.0.2")


def test_metrics_go_to_the_forwarded_client_not_to_the_proxy(edge):
    from chat.scrape import REFUSAL

    assert _get(edge, "/metrics")[0] == 200  # the "proxy" itself may scrape
    assert _get(edge, "/metrics", {"X-Forwarded-For": "203.0.113.9"}) == (403, REFUSAL)
    # From an untrusted peer, a forged header changes nothing.
    assert _get(edge, "/metrics", {"X-Forwarded-For": "127.0.0.1"}, source="127.0.0.2") == (403, REFUSAL)


def test_the_access_log_shows_the_forwarded_client(edge):
    _get(edge, "/healthz", {"X-Forwarded-For": "203.0.113.9", "User-Agent": "forwarded-probe"})
    _get(edge, "/healthz", {"X-Forwarded-For": "198.51.100.1", "User-Agent": "forged-probe"},
         source="127.0.0.2")
    deadline = time.monotonic() + 10
    while "forged-probe" not in edge.log():
        assert time.monotonic() < deadline, edge.log()
        time.sleep(0.1)
    lines = edge.log().splitlines()
    assert any(line.startswith("203.0.113.9 ") and "forwarded-probe" in line for line in lines), lines
    assert any(line.startswith("127.0.0.2 ") and "forged-probe" in line for line in lines), lines


def _forwarded_socket(server, key, origin, host="localhost:8443"):
    return websocket.create_connection(server.ws_url, timeout=10, origin=origin, header={
        "Cookie": f"sessionid={key}", "X-Forwarded-Host": host})


def test_the_origin_check_compares_with_the_forwarded_host(edge, server, make_users):
    [(username, key)] = make_users(1)
    ws = _forwarded_socket(edge, key, origin="https://localhost:8443")
    send(ws, type="whoami")
    assert receive(ws)["user"] == username
    ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _forwarded_socket(edge, key, origin="https://evil.example")
    assert refused.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as untrusted:  # no trusted proxies there
        _forwarded_socket(server, key, origin="https://localhost:8443")
    assert untrusted.value.status_code == 403


def _trickle_a_body(server, headers, path="/accounts/login/"):
    """POST a login form body a byte at a time; return (the answer, seconds until closed)."""
    import gevent

    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT + 15)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{headers}"
                  "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
                  "username=").encode())
    started = time.monotonic()

    def trickle():
        for _ in range(200):
            gevent.sleep(0.2)
            sock.sendall(b"a")

    trickler = gevent.spawn(trickle)
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except OSError:
        pass  # a reset after the answer ends it too
    finally:
        trickler.kill()
        sock.close()
    return answer.decode(errors="replace"), time.monotonic() - started


def test_a_body_read_by_django_that_trickles_is_answered_408_and_dropped(edge):
    answer, took = _trickle_a_body(edge, f"X-Forwarded-Proto: https\r\nOrigin: https://127.0.0.1:{edge.port}\r\n"
                                         f"Cookie: {CSRF_COOKIE}\r\n")
    assert answer.startswith("HTTP/1.1 408 Request Timeout\r\n"), answer
    assert answer.endswith("The request body did not arrive in time.\n"), answer
    assert BODY_TIMEOUT - 0.5 < took < BODY_TIMEOUT + 5, took
    assert "no complete request body within 2 s" in edge.log()
    assert _get(edge, "/healthz")[0] == 200


def test_a_body_left_unread_that_trickles_is_dropped_after_the_answer(edge):
    answer, took = _trickle_a_body(edge, "")  # no CSRF cookie: refused before the body is read
    assert answer.startswith("HTTP/1.1 403 Forbidden\r\n"), answer
    assert BODY_TIMEOUT - 0.5 < took < BODY_TIMEOUT + 5, took


def test_the_worker_module_keeps_the_master_free_of_django_db_and_metrics():
    # gunicorn's master imports the worker class; metrics made before the fork write to the
    # master's files, which on_starting deletes: /metrics then answered an empty page.
    import subprocess
    import sys

    from tests.live import BASE_DIR

    code = ("import patches, sys, chat.worker; print(sorted(m for m in sys.modules "
            "if m.startswith(('django.db', 'prometheus_client', 'chat.metrics'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_body_deadline_counts_from_the_first_read_and_covers_every_read():
    import gevent

    from chat.worker import BodyTimeout, DeadlineReader

    class Trickle:
        def read(self, size=-1):
            gevent.sleep(0.3)
            return b"a"

        readline = read

    now = [100.0]
    reader = DeadlineReader(Trickle(), 0.5, clock=lambda: now[0])
    assert reader.read(1) == b"a"  # the clock (fake) has not moved: 0.5 s left
    now[0] += 0.4
    with pytest.raises(BodyTimeout, match="no complete request body within 0.5 s"):
        reader.readline()  # 0.1 s left, the read takes 0.3
    now[0] += 0.2
    with pytest.raises(BodyTimeout):
        reader.read(1)  # past the deadline: not even tried
