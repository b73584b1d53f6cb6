"""The browser client's fallback to HTTP (issue 15): a page whose WebSocket gets nowhere.

Chromium, Playwright and the helpers are those of ``tests/test_browser.py``. ``page.route_web_socket``
stands in for a proxy in front of ``/ws/``: it kills the page's sockets as they open, or lets
them open and passes nothing, or passes them to the server; plain HTTP (the page, ``/http/``)
always goes through. The server is a real gunicorn with two workers, so the page's requests
land on either.
"""
import json
import re
import time

import pytest

# The fixtures are imported to be found here: browser, make_room, make_users, open_page.
from tests.test_browser import (RECONNECT_MS, TIMEOUT_MS, browser, expect,  # noqa: F401
                                make_room, make_users, open_page, orm)

FALLBACK = "Online (HTTP fallback)"
WITHIN_MS = 20_000  # issue 15: two users chat both ways within 20 s of opening the page


@pytest.fixture(scope="module")
def server(start_server):
    """This module's gunicorn: two workers, as a deployment has."""
    return start_server(WEB_CONCURRENCY=2)


class Proxy:
    """What stands between one page and /ws/: ``mode`` is "kill", "silent" or "pass".

    "kill" closes each socket as it opens; "silent" lets it open and never connects it to the
    server nor answers it; "pass" connects it to the server. ``sockets`` holds every one.
    """

    def __init__(self, chat, mode):
        self.mode = mode
        self.sockets = []
        chat.page.route_web_socket(re.compile(r"/ws/$"), self._connected)

    def _connected(self, ws):
        self.sockets.append(ws)
        if self.mode == "kill":
            ws.close()
        elif self.mode == "pass":
            ws.connect_to_server()


class HttpLog:
    """The page's requests to /http/, and the number of sockets it had opened at the first POST."""

    def __init__(self, chat, proxy=None):
        self.requests = []
        self.sockets_before_post = None
        chat.page.on("request", lambda request: self._seen(request, proxy))

    def _seen(self, request, proxy):
        if "/http/" not in request.url:
            return
        self.requests.append(request)
        if request.method == "POST" and self.sockets_before_post is None and proxy is not None:
            self.sockets_before_post = len(proxy.sockets)

    def frames(self, kind):
        return [frame for request in self.requests if request.method == "POST"
                for frame in request.post_data_json["frames"] if frame["type"] == kind]


def goto(chat, slug):
    with chat.explained():
        chat.page.goto(f"{chat.server.url}/rooms/{slug}/")


def on_fallback(chat, timeout=TIMEOUT_MS):
    with chat.explained():
        expect(chat.status).to_have_attribute("data-transport", "http", timeout=timeout)
        expect(chat.status).to_have_attribute("data-state", "online", timeout=timeout)
        expect(chat.status).to_have_text(FALLBACK)


def on_websocket(chat, timeout=TIMEOUT_MS):
    with chat.explained():
        expect(chat.status).to_have_attribute("data-transport", "ws", timeout=timeout)
        expect(chat.status).to_have_attribute("data-state", "online", timeout=timeout)
        expect(chat.status).to_have_text("Online")


def stored(django_db_blocker, slug):
    from chat.models import Message

    with orm(django_db_blocker):
        return list(Message.objects.filter(room__slug=slug).order_by("seq").values_list("body", flat=True))


@pytest.mark.parametrize("mode", ["kill", "silent"], ids=["killed-on-open", "left-silent"])
def test_two_users_whose_socket_gets_nowhere_chat_over_http_with_a_websocket_user(
        mode, server, make_users, make_room, open_page, django_db_blocker):
    (alice, a_key), (bob, b_key), (carol, c_key) = make_users(3, prefix=f"fb{mode}")
    room = make_room()
    c = open_page(c_key)
    c.open_room(room)  # a working WebSocket
    a, b = open_page(a_key), open_page(b_key)
    proxies = [Proxy(a, mode), Proxy(b, mode)]
    logs = [HttpLog(a, proxies[0]), HttpLog(b, proxies[1])]
    opened = time.monotonic()
    goto(a, room)
    goto(b, room)
    for page in (a, b):
        on_fallback(page, timeout=WITHIN_MS)
    assert [log.sockets_before_post for log in logs] == [1, 1]  # one failure was enough
    expect(c.presence).to_have_text(sorted([alice, bob, f"{carol} (you)"]))

    a.send("alice over http")
    b.expect_bodies(["alice over http"])
    b.send("bob over http")
    c.send("carol over ws")
    expected = ["alice over http", "bob over http", "carol over ws"]
    for page in (a, b, c):
        page.expect_bodies(expected)  # carol saw theirs live; they saw hers
    assert time.monotonic() - opened < WITHIN_MS / 1000
    # Sent over HTTP; again (same ref) when a request reached the other worker and its new
    # stream resumed the page: stored once all the same.
    sends = logs[0].frames("send")
    assert {(f["body"], f["ref"]) for f in sends} == {("alice over http", sends[0]["ref"])}
    on_websocket(c)

    a.page.reload()  # the server renders them into the page, and the page resumes after them
    on_fallback(a, timeout=WITHIN_MS)
    a.expect_bodies(expected)
    assert a.seqs() == [1, 2, 3]
    assert stored(django_db_blocker, room) == expected


def test_the_page_returns_to_the_websocket_once_it_gets_through_with_no_duplicate_or_gap(
        server, make_users, make_room, open_page, django_db_blocker):
    (_, a_key), (_, c_key) = make_users(2, prefix="fbback")
    room = make_room()
    c = open_page(c_key)
    c.open_room(room)
    a = open_page(a_key)
    proxy = Proxy(a, "kill")
    log = HttpLog(a, proxy)
    goto(a, room)
    on_fallback(a)
    assert a.page.locator(".status").get_attribute("title") == (
        "WebSockets don't get through on this network: messages come over HTTP.")
    for n in range(1, 4):
        c.send(f"live {n}")
    a.expect_bodies([f"live {n}" for n in range(1, 4)])

    proxy.mode = "pass"
    a.page.evaluate("window.dispatchEvent(new Event('online'))")  # probe now, not in 30 s
    a.send("sent while switching")
    for n in range(4, 9):
        c.send(f"live {n}")
    on_websocket(a)
    expected = [f"live {n}" for n in range(1, 4)] + ["sent while switching"] + [
        f"live {n}" for n in range(4, 9)]
    for page in (a, c):
        expect(page.messages).to_have_count(len(expected))
        expect(page.pending).to_have_count(0)
    assert a.seqs() == list(range(1, 10))  # each seq once, none missing
    assert sorted(stored(django_db_blocker, room)) == sorted(expected)  # each stored once
    assert a.bodies() == stored(django_db_blocker, room) == c.bodies()
    posts = len(log.requests)
    c.send("after the switch")
    a.expect_bodies(stored(django_db_blocker, room))
    a.page.wait_for_timeout(300)
    assert len(log.requests) == posts  # nothing more over HTTP: the socket carries it all
    assert a.page.locator(".status").get_attribute("title") is None


def test_after_the_websocket_worked_it_takes_three_failures_in_a_row_to_fall_back(
        server, make_users, make_room, open_page):
    [(_, key)] = make_users(1, prefix="fbthree")
    room = make_room()
    a = open_page(key)
    proxy = Proxy(a, "pass")
    log = HttpLog(a, proxy)
    a.open_room(room)
    on_websocket(a)
    proxy.mode = "kill"
    proxy.sockets[0].close()  # the network changed: from now on sockets die as they open
    on_fallback(a, timeout=RECONNECT_MS)
    assert log.sockets_before_post == 4  # the one that worked, then three that died
    a.send("still here")
    a.expect_bodies(["still here"])


def test_a_page_whose_websocket_works_makes_no_request_to_the_http_endpoint(
        server, make_users, make_room, open_page):
    (_, a_key), (_, b_key) = make_users(2, prefix="fbnone")
    room = make_room()
    a, b = open_page(a_key), open_page(b_key)
    logs = [HttpLog(a), HttpLog(b)]
    a.open_room(room)
    b.open_room(room)
    a.send("plain websocket")
    b.expect_bodies(["plain websocket"])
    b.send("and back")
    a.expect_bodies(["plain websocket", "and back"])
    for page in (a, b):
        on_websocket(page)
    a.page.wait_for_timeout(500)
    assert [log.requests for log in logs] == [[], []]


def test_a_restarting_server_refusing_handshakes_does_not_push_the_page_to_http(
        server, make_users, make_room, open_page):
    [(_, key)] = make_users(1, prefix="fbdrain")
    room = make_room()
    a = open_page(key)
    proxy = Proxy(a, "pass")
    log = HttpLog(a, proxy)
    a.open_room(room)
    proxy.mode = "kill"  # a draining worker answers HTTP (405 to a GET of /http/) but no handshake
    proxy.sockets[0].send(json.dumps({"type": "reconnect", "after": 1}))
    a.page.wait_for_timeout(200)  # the hint reaches the page before the close (Playwright may reorder)
    proxy.sockets[0].close(code=1001, reason="server going away")
    deadline = time.monotonic() + RECONNECT_MS / 1000
    while len(proxy.sockets) < 4 and time.monotonic() < deadline:  # three refused in a row
        a.page.wait_for_timeout(100)
    assert len(proxy.sockets) == 4
    a.page.wait_for_timeout(500)  # a switch would have begun with a check of /http/ by now
    assert log.requests == []  # not even the check: failures after the hint are the restart's
    expect(a.status).to_have_attribute("data-state", "reconnecting")
    proxy.mode = "pass"  # the new worker is up
    a.page.evaluate("window.dispatchEvent(new Event('online'))")  # retry now, not in 2-4 s
    on_websocket(a)
    assert log.requests == []


def test_a_response_lost_on_the_way_is_asked_for_again_with_the_same_ack_and_shown_once(
        server, make_users, make_room, open_page, django_db_blocker):
    [(_, key)] = make_users(1, prefix="fblost")
    room = make_room()
    a = open_page(key)
    Proxy(a, "kill")
    log = HttpLog(a)
    lost = []

    def lose_the_first_answer_to_a_send(route):
        body = route.request.post_data_json if route.request.method == "POST" else None
        if body and not lost and any(frame["type"] == "send" for frame in body["frames"]):
            route.fetch()  # the server handles it...
            lost.append(body)
            route.abort()  # ...and its response never reaches the page
        else:
            route.continue_()

    a.page.route(re.compile(r"/http/$"), lose_the_first_answer_to_a_send)
    goto(a, room)
    on_fallback(a)
    a.send("answered twice, shown once")
    a.expect_bodies(["answered twice, shown once"])
    on_fallback(a)
    posts = [request.post_data_json for request in log.requests if request.method == "POST"]
    assert posts.count(lost[0]) == 2  # the same request again: same stream, ack and frames
    assert stored(django_db_blocker, room) == ["answered twice, shown once"]
    assert a.seqs() == [1]


def test_the_page_keeps_to_the_limits_the_server_tells_it(
        start_server, make_users, make_room, open_page, django_db_blocker):
    """A server allowing 2 frames a request: the page learns it from the first answer."""
    strict = start_server(WEB_CONCURRENCY=2, CHAT_HTTP_FRAMES=2)
    [(_, key)] = make_users(1, prefix="fblimits")
    room = make_room()
    page = open_page(key, on=strict)
    Proxy(page, "kill")
    log = HttpLog(page)
    goto(page, room)
    on_fallback(page, timeout=WITHIN_MS)
    bodies = [f"quick {n}" for n in range(5)]
    # All five in one task of the page: their frames queue up before any request goes.
    page.page.evaluate("""bodies => {
        const form = document.querySelector(".composer");
        for (const body of bodies) {
            form.elements.body.value = body;
            form.requestSubmit();
        }
    }""", bodies)
    page.expect_bodies(bodies)
    assert stored(django_db_blocker, room) == bodies
    posts = [request.post_data_json["frames"] for request in log.requests if request.method == "POST"]
    sizes = sorted(len(frames) for frames in posts if frames)
    assert sizes[-1] == 2 and sizes[-2:] == [2, 2]  # never over 2, and the queue did fill them
    # The requests with frames (answered at once; a waiting poll's answer may be 25 s away).
    statuses = {request.response().status for request in log.requests
                if request.method == "POST" and request.post_data_json["frames"]}
    assert statuses == {200}
