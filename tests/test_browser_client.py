"""The browser client's rare paths (issue 13): a bounded window of messages after a long
absence and while messages pour in, close codes that stop the retries, resends that give up
and offer "retry", a server whose seqs went down, and a room that closed its door.

Chromium, Playwright and the helpers are those of ``tests/test_browser.py``. Where a real
gunicorn cannot be made to do something on cue (close with 1008 or 1002, never answer a send),
``FakeSocket`` stands in for ``/ws/`` through ``page.route_web_socket``: the page itself, its
session and its static files still come from gunicorn.
"""
import json
import re
import time

import pytest

from tests.live import collect_messages, connect, join, send
# The fixtures are imported to be found here: browser, make_room, make_users, open_page.
from tests.test_browser import (RECONNECT_MS, TIMEOUT_MS, browser, expect,  # noqa: F401
                                make_room, make_users, open_page, orm)

TS = "2026-01-02T03:04:05Z"
WINDOW = 500  # LIMITS.window in chat/static/chat/sync.js


@pytest.fixture(scope="module")
def server(start_server):
    """This module's gunicorn: one worker, and a rate limit no test here reaches by accident."""
    return start_server(CHAT_RATE_LIMIT=2000, CHAT_RATE_BURST=2000)


def add_messages(django_db_blocker, slug, count, author, body="message {}"):
    """Store ``count`` more messages in ``slug`` behind the server's back (as a long absence)."""
    from django.contrib.auth import get_user_model

    from chat.models import Message, Room

    with orm(django_db_blocker):
        room = Room.objects.get(slug=slug)
        user = get_user_model().objects.get(username=author)
        first = room.last_seq + 1
        Message.objects.bulk_create(Message(room=room, seq=seq, user=user, body=body.format(seq))
                                    for seq in range(first, first + count))
        Room.objects.filter(pk=room.pk).update(last_seq=first + count - 1)


def away(page, while_away):
    """Take the page off the network, call ``while_away()``, and wait until it is back."""
    page.context.set_offline(True)
    expect(page.status).to_have_attribute("data-state", "reconnecting")
    while_away()
    page.context.set_offline(False)
    page.online(timeout=RECONNECT_MS)


def message(room, seq, user, body, ref=None):
    event = {"type": "message", "room": room, "seq": seq, "id": seq, "user": user, "body": body, "ts": TS}
    if ref is not None:
        event["ref"] = ref
    return event


class FakeSocket:
    """A stand-in for /ws/ in one page: each connection is handled by ``behave``.

    ``behave(index, ws, frame)`` gets every frame of connection ``index``; the default answers
    ``join`` with a ``joined`` at ``self.seq`` and nothing else. ``on_connect(index, ws)`` may
    close a connection as soon as it opens. Every frame is kept in ``frames`` as
    ``(index, frame)``.
    """

    def __init__(self, page, room, user, seq=0):
        self.room, self.user, self.seq = room, user, seq
        self.sockets, self.frames = [], []
        self.on_connect = lambda index, ws: None
        self.behave = self.answer_join
        page.route_web_socket(re.compile(r"/ws/$"), self._connected)

    def _connected(self, ws):
        index = len(self.sockets)
        self.sockets.append(ws)
        ws.on_message(lambda payload: self._received(index, ws, payload))
        self.on_connect(index, ws)

    def _received(self, index, ws, payload):
        frame = json.loads(payload)
        self.frames.append((index, frame))
        self.behave(index, ws, frame)

    def answer_join(self, index, ws, frame):
        if frame["type"] == "join":
            self.reply(ws, type="joined", room=self.room, seq=self.seq, messages=[], more=False,
                       presence=[self.user], ref=frame["ref"])

    @staticmethod
    def reply(ws, **event):
        ws.send(json.dumps(event))

    def sent(self, kind):
        return [frame for _, frame in self.frames if frame["type"] == kind]


def fake_page(open_page, make_users, make_room):
    """A signed-in page on a real room page whose socket is a ``FakeSocket``."""
    [(name, key)] = make_users(1, prefix="fake")
    room = make_room()
    page = open_page(key)
    return page, FakeSocket(page.page, room, name), room, name


def wait_for(page, condition, timeout_ms=TIMEOUT_MS):
    """Let Playwright deliver events until ``condition()`` holds; fail after ``timeout_ms``."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_ms} ms: {condition.__doc__ or condition}")
        page.page.wait_for_timeout(50)


def test_close_codes_that_retrying_cannot_fix_stop_the_page_until_reconnect_is_pressed(
        open_page, make_users, make_room):
    page, fake, room, _ = fake_page(open_page, make_users, make_room)
    refusals = [
        (1008, "The server refused this connection (policy)."),
        (1002, "The connection was closed for a protocol error (1002)."),
        (1003, "The connection was closed for a protocol error (1003)."),
        (1007, "The connection was closed for a protocol error (1007)."),
        (4429, "Too many open connections for this account: close some tabs."),
    ]
    fake.on_connect = lambda index, ws: index < len(refusals) and ws.close(code=refusals[index][0])
    alert, reconnect = page.page.locator(".alert-text"), page.page.get_by_role("button", name="Reconnect")
    page.page.goto(f"{page.server.url}/rooms/{room}/")
    for index, (code, text) in enumerate(refusals):
        expect(alert).to_have_text(text)
        expect(reconnect).to_be_visible()
        expect(page.status).to_have_attribute("data-state", "offline")
        page.page.wait_for_timeout(1200)  # a retry would have come by now (the first waits <= 0.5 s)
        assert len(fake.sockets) == index + 1, f"the page retried after {code}"
        reconnect.click()  # the next connection: refused with the next code, or answered
    page.online()
    expect(page.page.get_by_role("alert")).to_be_hidden()
    assert len(fake.sockets) == len(refusals) + 1


def test_close_codes_of_passing_trouble_are_retried_with_backoff(open_page, make_users, make_room):
    page, fake, room, _ = fake_page(open_page, make_users, make_room)
    passing = [1001, 1006, 1011, 1012, 1013]

    def behave(index, ws, frame):
        fake.answer_join(index, ws, frame)
        if frame["type"] == "join" and index < len(passing):
            ws.close(code=passing[index])  # right after joined: the backoff starts again from 0.5 s

    fake.behave = behave
    page.open_room(room)
    wait_for(page, lambda: len(fake.sent("join")) == len(passing) + 1)
    page.online()
    expect(page.page.get_by_role("alert")).to_be_hidden()
    assert [frame["since"] for frame in fake.sent("join")] == [0] * (len(passing) + 1)


def test_after_a_long_absence_only_the_newest_window_is_loaded_and_the_rest_waits_at_the_top(
        server, open_page, make_users, make_room, django_db_blocker):
    [(name, key)] = make_users(1, prefix="absent")
    room = make_room(messages=30, author=name)
    page = open_page(key)
    page.open_room(room)
    earlier = page.page.locator(".history-edge .earlier")
    expect(earlier).to_be_hidden()  # 1 to 30: the beginning is on the page
    away(page, lambda: add_messages(django_db_blocker, room, 1200, name))  # seqs 31 to 1230

    expect(page.messages).to_have_count(WINDOW)
    assert page.seqs() == list(range(731, 1231))  # the newest 500, as joined brought them
    expect(earlier).to_have_text("730 earlier messages")
    assert page.sent("history") == []  # not one page of the 700 missed ones was asked for
    page.page.get_by_role("button", name="Load older messages").click()
    expect(page.messages).to_have_count(WINDOW + 50)
    expect(earlier).to_have_text("680 earlier messages")
    assert page.seqs()[:2] == [681, 682]
    page.page.locator(".log").evaluate("el => el.scrollTo(0, el.scrollHeight)")  # back at the bottom
    expect(page.messages).to_have_count(WINDOW)
    expect(earlier).to_have_text("730 earlier messages")
    assert page.seqs() == list(range(731, 1231))


def test_a_reader_scrolled_back_keeps_the_old_messages_and_a_marker_for_the_missed_ones(
        server, open_page, make_users, make_room, django_db_blocker):
    [(name, key)] = make_users(1, prefix="reader")
    room = make_room(messages=30, author=name)
    page = open_page(key)
    page.open_room(room)
    log = page.page.locator(".log")
    log.evaluate("el => el.scrollTo(0, 0)")  # reading the beginning
    away(page, lambda: add_messages(django_db_blocker, room, 600, name))  # seqs 31 to 630

    # joined brought 131 to 630; 31 to 130 are beyond the window: marked, not fetched.
    expect(page.messages).to_have_count(530)
    marker = page.page.locator(".messages > li.gap")
    expect(marker).to_have_text(re.compile(r"^\s*100 earlier messages\s*Load older messages\s*$"))
    assert page.sent("history") == []
    assert log.evaluate("el => el.scrollTop") < 200  # the reader was left where they were
    assert page.seqs()[29:31] == [30, 131]
    marker.get_by_role("button").click()
    expect(marker).to_have_text(re.compile(r"^\s*50 earlier messages"))
    marker.get_by_role("button").click()
    expect(marker).to_have_count(0)
    assert page.seqs() == list(range(1, 631))
    assert [(ask["before"], ask["limit"]) for ask in page.sent("history")] == [(131, 50), (81, 50)]
    log.evaluate("el => el.scrollTo(0, el.scrollHeight)")
    expect(page.messages).to_have_count(WINDOW)
    assert page.seqs() == list(range(131, 631))


def test_the_window_stays_bounded_while_messages_arrive_live(
        server, open_page, make_users, make_room):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="flood")
    room = make_room()
    page = open_page(alice_key)
    page.open_room(room)
    bob_ws = connect(server, bob_key)
    try:
        join(bob_ws, room)

        def flood(first, count):
            for n in range(first, first + count):
                send(bob_ws, type="send", room=room, body=f"live {n}", ref=f"flood-{n}")
            collect_messages(bob_ws, count, timeout=60)  # stored and broadcast

        flood(1, 700)
        expect(page.messages.last.locator(".body")).to_have_text("live 700", timeout=30_000)
        expect(page.messages).to_have_count(WINDOW)  # at the bottom: the oldest were pruned
        assert page.seqs() == list(range(201, 701))
        expect(page.page.locator(".history-edge .earlier")).to_have_text("200 earlier messages")

        page.page.locator(".log").evaluate("el => el.scrollTo(0, 1000)")  # reading back
        flood(701, 100)
        expect(page.messages.last.locator(".body")).to_have_text("live 800", timeout=30_000)
        expect(page.messages).to_have_count(WINDOW + 100)  # nothing is taken from under the reader
        assert page.seqs()[0] == 201
        page.page.locator(".log").evaluate("el => el.scrollTo(0, el.scrollHeight)")
        expect(page.messages).to_have_count(WINDOW)
        assert page.seqs() == list(range(301, 801))
    finally:
        bob_ws.close()


def test_a_message_refused_again_and_again_offers_a_retry_that_keeps_its_ref(
        start_server, open_page, make_users, make_room, django_db_blocker):
    # One token per 8 s: the first message takes it, the second is refused three times (sent,
    # resent 1.5 s and 3 s later), then waits for the reader's retry.
    own = start_server(CHAT_RATE_LIMIT=0.125, CHAT_RATE_BURST=1)
    [(_, key)] = make_users(1, prefix="limited")
    room = make_room()
    page = open_page(key, on=own)
    page.open_room(room)
    submit = """body => {
        const field = document.getElementById("composer-body");
        field.value = body;  // no input event: no typing signal, which would take a token too
        field.form.requestSubmit();
    }"""
    page.page.evaluate(submit, "takes the token")
    started = time.monotonic()
    page.page.evaluate(submit, "refused for now")
    failed = page.pending.filter(has_text="refused for now")
    expect(failed.locator(".state")).to_have_text("not sent: retry", timeout=7_000)
    expect(failed).to_have_class(re.compile(r"\bfailed\b"))
    assert failed.locator(".state").get_attribute("title") == "slow down: at most 0.125 messages a second"
    refs = {frame["ref"] for frame in page.sent("send", body="refused for now")}
    assert len(page.sent("send", body="refused for now")) == 3 and len(refs) == 1
    page.page.wait_for_timeout(1000)
    assert len(page.sent("send", body="refused for now")) == 3  # no more on its own

    page.page.wait_for_timeout(max(0, 8.5 - (time.monotonic() - started)) * 1000)  # a new token
    failed.get_by_role("button", name="retry").click()
    page.expect_bodies(["takes the token", "refused for now"])
    resent = page.sent("send", body="refused for now")
    assert len(resent) == 4 and {frame["ref"] for frame in resent} == refs
    from chat.models import Message

    with orm(django_db_blocker):
        assert Message.objects.filter(room__slug=room, body="refused for now").count() == 1


def test_a_message_never_answered_is_given_up_after_three_sends_and_retried_with_its_ref(
        open_page, make_users, make_room):
    page, fake, room, name = fake_page(open_page, make_users, make_room)
    acknowledge = False

    def behave(index, ws, frame):
        fake.answer_join(index, ws, frame)
        if frame["type"] == "send" and acknowledge:
            fake.seq += 1
            fake.reply(ws, **message(room, fake.seq, name, frame["body"], frame["ref"]))
        elif frame["type"] == "send":
            ws.close(code=1012)  # the server restarts before it answers, again and again

    fake.behave = behave
    page.open_room(room)
    page.send("into the void")
    state = page.pending.locator(".state")
    expect(state).to_have_text("not sent: retry", timeout=RECONNECT_MS)
    assert state.get_attribute("title") == "no answer from the server"
    page.online()  # connected again, and nothing more goes out
    page.page.wait_for_timeout(800)
    sends = fake.sent("send")
    assert len(sends) == 3 and len({frame["ref"] for frame in sends}) == 1

    acknowledge = True
    page.pending.get_by_role("button", name="retry").click()
    page.expect_bodies(["into the void"])
    assert [frame["ref"] for frame in fake.sent("send")] == [sends[0]["ref"]] * 4


def test_a_server_whose_seq_went_down_gets_a_fresh_page_with_its_new_messages(
        start_server, open_page, make_users, make_room, django_db_blocker):
    own = start_server()  # restarted over a "recreated" database
    [(name, key)] = make_users(1, prefix="reset")
    room = make_room(messages=5, author=name)
    page = open_page(key, on=own)
    page.open_room(room)
    assert page.bodies() == [f"message {n}" for n in range(1, 6)]

    def recreate():
        from chat.models import Message, Room

        with orm(django_db_blocker):
            Message.objects.filter(room__slug=room).delete()
            Room.objects.filter(slug=room).update(last_seq=0)
        add_messages(django_db_blocker, room, 2, name, body="new {}")

    own.restart(while_down=recreate)
    page.online(timeout=RECONNECT_MS)
    expect(page.page.locator(".messages > .notice")).to_have_text(
        "The server's history was reset: these are its latest messages.")
    page.expect_bodies(["new 1", "new 2"])
    page.send("after the reset")
    page.expect_bodies(["new 1", "new 2", "after the reset"])
    assert page.seqs() == [1, 2, 3]
    joins = [frame["since"] for frame in page.sent("join")]
    assert len(joins) >= 2 and set(joins) == {5}  # at first, and once back (a dying worker may take one)
    assert page.sent("history", before=3) != []  # the new history, asked for once it was seen


def test_removed_from_a_private_room_the_page_says_why_and_stops_joining(
        server, open_page, make_users, make_room, django_db_blocker):
    [(name, key)] = make_users(1, prefix="evicted")
    room = make_room(private=True, members=[name])
    page = open_page(key)
    sockets = []
    page.page.on("websocket", lambda ws: sockets.append(ws))
    page.open_room(room)
    from chat.models import Room

    with orm(django_db_blocker):  # no m2m signal: the page learns of it when it joins again
        Room.members.through.objects.filter(room__slug=room).delete()
    page.context.set_offline(True)
    expect(page.status).to_have_attribute("data-state", "reconnecting")
    page.context.set_offline(False)
    expect(page.page.get_by_role("alert")).to_be_visible()
    expect(page.page.locator(".alert-text")).to_have_text(f"'{room}' is a private room; ask a member to add you")
    expect(page.page.get_by_role("button", name="Reconnect")).to_be_hidden()
    expect(page.status).to_have_attribute("data-state", "offline")
    expect(page.page.get_by_label("Message", exact=True)).to_be_disabled()
    count = len(sockets)
    page.page.wait_for_timeout(1200)
    assert len(sockets) == count and sockets[-1].is_closed()


def test_a_left_event_with_a_reason_shows_its_detail_and_the_page_stays_out(
        open_page, make_users, make_room):
    page, fake, room, _ = fake_page(open_page, make_users, make_room)
    detail = "you are no longer a member of this private room"
    page.open_room(room)
    closed = []
    fake.sockets[0].on_close(lambda code, reason: closed.append(code))
    page.send("pending when the door closed")
    wait_for(page, lambda: fake.sent("send"))
    fake.reply(fake.sockets[0], type="left", room=room, reason="forbidden", detail=detail)
    expect(page.page.locator(".alert-text")).to_have_text(detail)
    expect(page.page.get_by_role("button", name="Reconnect")).to_be_hidden()
    expect(page.pending.locator(".state")).to_have_text("not sent: you are not in this room")
    expect(page.page.get_by_label("Message", exact=True)).to_be_disabled()
    wait_for(page, lambda: closed == [1000])  # the page let go of its socket
    page.page.wait_for_timeout(1200)
    assert len(fake.sockets) == 1 and len(fake.sent("join")) == 1


def test_removed_while_in_the_room_the_page_shows_why_and_stays_out(
        server, open_page, make_users, make_room, django_db_blocker, pooled_db):
    [(name, key)] = make_users(1, prefix="removed")
    room = make_room(private=True, members=[name])
    page = open_page(key)
    sockets = []
    page.page.on("websocket", lambda ws: sockets.append(ws))
    page.open_room(room)
    from django.contrib.auth import get_user_model

    from chat.db import connection_pool
    from chat.models import Room

    with orm(django_db_blocker):  # the signal: the server sends `left` with a reason
        try:
            Room.objects.get(slug=room).members.remove(get_user_model().objects.get(username=name))
        finally:
            connection_pool().close()
    with page.explained():
        expect(page.page.locator(".alert-text")).to_have_text(
            "you are no longer a member of this private room")
    expect(page.page.get_by_role("button", name="Reconnect")).to_be_hidden()
    expect(page.page.get_by_label("Message", exact=True)).to_be_disabled()
    wait_for(page, lambda: sockets[-1].is_closed())  # the page let go of its socket
    page.page.wait_for_timeout(1200)
    assert len(sockets) == 1 and len(page.sent("join")) == 1


def test_one_socket_too_many_for_the_account_waits_for_reconnect(
        start_server, open_page, make_users, make_room):
    own = start_server(CHAT_SOCKETS_PER_USER=1)
    [(_, key)] = make_users(1, prefix="tabs")
    room = make_room()
    first = open_page(key, on=own)
    first.open_room(room)
    second = open_page(key, on=own)
    sockets = []
    second.page.on("websocket", lambda ws: sockets.append(ws))
    second.page.goto(f"{own.url}/rooms/{room}/")
    expect(second.page.locator(".alert-text")).to_have_text(
        "Too many open connections for this account: close some tabs.")
    expect(second.status).to_have_attribute("data-state", "offline")
    second.page.wait_for_timeout(1200)
    assert len(sockets) == 1  # no retry in a loop
    first.close()
    second.page.wait_for_timeout(500)  # the server counts the closed socket out
    second.page.get_by_role("button", name="Reconnect").click()
    second.online()
    expect(second.page.get_by_role("alert")).to_be_hidden()


# The pure parts, imported into a page of the real server (no mocks of the DOM or of timers).

def run_module_script(open_page, server, script):
    """Evaluate ``script`` (the body of an async function) in a page of ``server``; return its value."""
    page = open_page()
    page.page.goto(f"{server.url}/accounts/login/")
    return page.page.evaluate(f"async () => {{ {script} }}")


def test_holes_are_filled_within_the_window_and_marked_beyond_it(server, open_page):
    result = run_module_script(open_page, server, """
        const { SeqWindow } = await import("/static/chat/seqs.js");
        const seqs = new SeqWindow({ top: 10, shown: [8, 9, 10], more: true, window: 100 });
        seqs.cover(201, 250);            // joined with more: 11..200 were never seen
        const first = seqs.nextFill(100); // only 151..200 lie inside the window (250 - 100)
        seqs.cover(151, 200);
        const second = seqs.nextFill(100);
        const marked = seqs.marked().map((h) => [h.lo, h.hi]);
        seqs.cover(120, 120);             // one seq answered inside the marked hole: it splits
        const split = seqs.marked().map((h) => [h.lo, h.hi]);
        const admitted = [seqs.admit(9, false), seqs.admit(120, false), seqs.admit(7, false),
                          seqs.admit(7, true)];
        seqs.pruned(201);                 // the oldest left the screen
        return { first, second, marked, split, admitted, holes: seqs.holes.length,
                 seen: [...seqs.seen].sort((a, b) => a - b), floor: seqs.floor, top: seqs.top };
    """)
    assert result["first"] == {"lo": 11, "before": 201, "limit": 50}
    assert result["second"] is None and result["marked"] == [[11, 150]]
    assert result["split"] == [[11, 119], [121, 150]]
    assert result["admitted"] == [False, True, False, True]  # shown / new / below the floor / older page
    assert (result["holes"], result["seen"], result["floor"], result["top"]) == (0, [], 201, 250)


def test_the_outbox_gives_up_after_three_sends_and_a_retry_starts_afresh(server, open_page):
    calls = run_module_script(open_page, server, """
        const { Outbox } = await import("/static/chat/outbox.js");
        const calls = [];
        let joined = true;
        const view = new Proxy({}, { get: (_, name) => (...args) => calls.push([name, ...args]) });
        const outbox = new Outbox({ view, retryAfter: 5,
            transmit: (ref, body) => (calls.push(["transmit", ref]), joined) });
        const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
        outbox.add("a", "busy");                        // send 1
        outbox.refused("a", "server_error", "the database is busy; try again");
        await sleep(30);                                // send 2, after 5 ms
        outbox.refused("a", "rate_limited", "slow down");
        await sleep(50);                                // send 3, after 10 ms
        outbox.refused("a", "rate_limited", "slow down"); // the third refusal: give up
        outbox.resume();                                // no send: it waits for the user
        outbox.add("b", "too long");
        outbox.refused("b", "bad_request", "body is too long");
        outbox.retry("a");                              // sent again, same ref
        outbox.confirmed("a");
        joined = false;
        outbox.add("c", "lost");                        // not joined: nothing goes out...
        outbox.pause(); outbox.resume();
        joined = true;                                  // ...then it goes out three times,
        outbox.resume(); outbox.pause(); outbox.resume(); outbox.pause(); outbox.resume();
        outbox.pause();                                 // unanswered: given up
        outbox.resume();
        return calls;
    """)
    assert calls == [
        ["pending", "a", "busy"], ["transmit", "a"], ["transmit", "a"], ["transmit", "a"],
        ["failed", "a", "slow down", True],
        ["pending", "b", "too long"], ["transmit", "b"], ["failed", "b", "body is too long", False],
        ["retrying", "a"], ["transmit", "a"], ["confirm", "a"],
        ["pending", "c", "lost"], ["transmit", "c"], ["transmit", "c"],
        ["transmit", "c"], ["transmit", "c"], ["transmit", "c"],
        ["failed", "c", "no answer from the server", True]]


def test_the_log_keeps_the_readers_place_when_it_drops_the_oldest(server, open_page):
    result = run_module_script(open_page, server, """
        const { MessageList } = await import("/static/chat/messages.js");
        const root = document.createElement("div");
        for (const [tag, name] of [["div", "log"], ["p", "history-edge"], ["ol", "messages"],
                                   ["p", "empty"], ["ol", "outbox"]]) {
            const el = document.createElement(tag);
            el.className = name;
            (name === "log" ? root : root.querySelector(".log")).append(el);
        }
        for (const name of ["older", "earlier", "beginning"]) {
            const el = document.createElement(name === "older" ? "button" : "span");
            el.className = name;
            root.querySelector(".history-edge").append(el);
        }
        document.body.replaceChildren(root);
        const log = root.querySelector(".log");
        log.style.height = "300px";  // CSSOM, not a style attribute: the CSP allows it
        const noop = () => {};
        const list = new MessageList(root, { me: "ann", onNearTop: noop, onNearEnd: noop,
                                             onExpand: noop, onRetry: noop });
        const batch = (lo, hi) => Array.from({ length: hi - lo + 1 }, (_, i) => ({
            seq: lo + i, id: lo + i, user: "bob", body: `m ${lo + i}`, ts: "2026-01-02T03:04:05Z" }));
        list.show(batch(1, 300), "live");
        const read = list.list.querySelector('[data-seq="250"]');
        read.scrollIntoView();
        const before = read.getBoundingClientRect().top;
        const reading = list.trim(50, 200);        // not at the bottom: down to 200, place kept
        const moved = Math.abs(read.getBoundingClientRect().top - before);
        list.scrollToEnd();
        const atEnd = list.trim(50, 200);          // at the bottom: down to the window
        return { reading, moved, atEnd, count: list.count,
                 first: list.list.firstElementChild.dataset.seq };
    """)
    assert result["reading"] == 101 and result["moved"] < 1
    assert (result["atEnd"], result["count"], result["first"]) == (251, 50, "251")


def test_a_restarting_server_s_reconnect_hint_is_waited_before_coming_back(
        open_page, make_users, make_room):
    page, fake, room, _ = fake_page(open_page, make_users, make_room)

    def behave(index, ws, frame):
        fake.answer_join(index, ws, frame)
        if frame["type"] == "join" and index == 0:
            fake.reply(ws, type="reconnect", after=3)  # as a draining worker does, before 1001

    fake.behave = behave
    page.open_room(room)
    wait_for(page, lambda: fake.sent("join"))
    page.page.wait_for_timeout(200)  # the hint is in the page before the close (Playwright
    fake.sockets[0].close(code=1001, reason="server going away")  # may reorder the two)
    closed_at = time.monotonic()
    page.page.wait_for_timeout(2500)  # without the hint the first retry waits 0.25-0.5 s
    assert len(fake.sockets) == 1, "the page came back before the server's delay"
    wait_for(page, lambda: len(fake.sent("join")) == 2, timeout_ms=6000)
    assert 3.0 <= time.monotonic() - closed_at <= 6.0
    page.online()
