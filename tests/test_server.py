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
