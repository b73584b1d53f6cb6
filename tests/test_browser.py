"""The browser chat in a real headless Chromium: Debian's ``chromium``, driven by Playwright.

Playwright's sync API works in this gevent-patched process as it is: it runs its asyncio loop in
a greenlet of its own and switches to it for each call; gevent patches ``selectors``, so the loop
waits on the gevent hub, and the driver subprocess is reaped by gevent's child watcher. (Tried
and kept: launching, several contexts, waits, timeouts and ``set_offline`` all behave, so
neither a subprocess nor the async API in a native thread is needed.)

One catch: between two sync calls Playwright leaves its (idle) loop marked as running in this
thread (``wait_for_future`` in playwright/_impl/_greenlets.py), and Django then refuses ORM calls
with ``SynchronousOnlyOperation``. ``DJANGO_ALLOW_ASYNC_UNSAFE`` is no way out (check chat.E004,
and the servers inherit our environment), so the ORM work of these tests runs in ``orm()``,
which lifts the mark for its duration: nothing runs on that loop while test code runs. The
browser is module-scoped, so the tests of other modules never see the mark.

Nothing is downloaded: ``playwright install`` is never run, ``executable_path`` is Debian's
chromium. Under ``CI=true`` a missing chromium or Playwright fails these tests; elsewhere they
are skipped. Every wait is bounded by a Playwright timeout.
"""
import asyncio
import json
import os
import re
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.live import BASE_DIR

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the ``browser`` fixture
    sync_playwright = None
    PlaywrightError = Exception

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 10_000
# After a restart the page retries with backoff (at most 10 s apart), so allow two tries.
RECONNECT_MS = 25_000
XSS = "<img src=x onerror=alert(1)>"
PASSWORD = "a sturdy passphrase 7"
#: Set by bench/screenshot.py: where to save the room page's screenshot (docs/screenshot-room.png).
SCREENSHOT_ENV = "CHAT_SCREENSHOT_PATH"


@contextmanager
def orm(django_db_blocker):
    """Run Django ORM work between Playwright calls (see the module's docstring)."""
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        with django_db_blocker.unblock():
            yield
    finally:
        asyncio._set_running_loop(loop)


@pytest.fixture(scope="module")
def make_users(make_users, django_db_blocker):
    """conftest's ``make_users``, usable while Playwright runs."""
    def make(*args, **kwargs):
        with orm(django_db_blocker):
            return make_users(*args, **kwargs)

    return make


@pytest.fixture(scope="module")
def make_room(make_room, django_db_blocker):
    """conftest's ``make_room``, usable while Playwright runs."""
    def make(*args, **kwargs):
        with orm(django_db_blocker):
            return make_room(*args, **kwargs)

    return make


@pytest.fixture(scope="module")
def server(start_server):
    """A gunicorn for this module instead of the shared one.

    Chromium shares the machine's cores with the servers: its bursts of CPU can hold a
    server process off the CPU for more than the blocking monitor's 0.1 s, which the shared
    server's end-of-run check would take for a hub that blocked.
    """
    return start_server()


@pytest.fixture(scope="module")
def browser():
    """One Chromium for this module; fails under CI when it can't run, skips elsewhere."""
    executable = shutil.which("chromium")
    problem = None
    if sync_playwright is None:
        problem = "Playwright for Python is not installed (pip install -r requirements.txt)"
    elif executable is None:
        problem = "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}: CI must run the browser tests")
        pytest.skip(problem)
    expect.set_options(timeout=TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                              timeout=30_000)
    except Exception:
        playwright.stop()
        raise
    yield chromium
    chromium.close()
    playwright.stop()


def test_static_files_and_a_strict_policy_come_from_the_django_process(client):
    """WhiteNoise serves the client with DEBUG off too (no collectstatic); pages get the CSP."""
    from chat.middleware import POLICY

    script = client.get("/static/chat/main.js")
    assert script.status_code == 200 and script["Content-Type"].startswith("text/javascript")
    assert b"RoomSync" in b"".join(script.streaming_content)
    page = client.get("/accounts/login/")
    assert page["Content-Security-Policy"] == POLICY
    for template in (BASE_DIR / "chat" / "templates").rglob("*.html"):
        text = template.read_text()
        assert " style=" not in text and "<style" not in text, template
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template  # no inline script


class ChatPage:
    """One browser context (one person) with one page, and what it shows of a room."""

    def __init__(self, browser, server, session_key=None, **context_options):
        self.server = server
        self.context = browser.new_context(viewport={"width": 1000, "height": 640}, **context_options)
        self.context.set_default_timeout(TIMEOUT_MS)
        if session_key:
            self.context.add_cookies([{"name": "sessionid", "value": session_key, "url": server.url}])
        self.page = self.context.new_page()
        self.dialogs, self.errors, self.csp_violations = [], [], []
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.sent_frames = []  # every frame the page sent on its sockets, parsed
        self.page.on("websocket", lambda ws: ws.on("framesent", self._frame_sent))
        self.status = self.page.locator(".status")
        self.messages = self.page.locator(".messages > li.msg")
        self.pending = self.page.locator(".outbox > li")
        self.presence = self.page.locator(".presence > li")
        self.typing = self.page.locator(".typing")

    def _frame_sent(self, payload):
        if isinstance(payload, str):
            self.sent_frames.append(json.loads(payload))

    def sent(self, kind, **fields):
        """The frames of type ``kind`` sent so far that carry ``fields``."""
        return [frame for frame in self.sent_frames if frame["type"] == kind
                and all(frame.get(name) == value for name, value in fields.items())]

    def _console(self, message):
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def open_room(self, slug):
        """Open the room's page and wait until it has joined the room."""
        with self.explained():
            response = self.page.goto(f"{self.server.url}/rooms/{slug}/")
        self.online()
        return response

    def online(self, timeout=TIMEOUT_MS):
        with self.explained():
            expect(self.status).to_have_attribute("data-state", "online", timeout=timeout)

    @contextmanager
    def explained(self):
        """On a timeout, add the end of the server's log to the failure."""
        try:
            yield
        except (AssertionError, PlaywrightError) as error:
            tail = "\n".join(self.server.log().splitlines()[-40:])
            raise AssertionError(f"{error}\n--- end of the server's log:\n{tail}") from error

    def send(self, text):
        """Type ``text`` into the message box and press Enter (Shift+Enter inside for newlines)."""
        field = self.page.get_by_label("Message", exact=True)
        field.click()
        for i, line in enumerate(text.split("\n")):
            if i:
                field.press("Shift+Enter")
            field.press_sequentially(line)
        field.press("Enter")

    def bodies(self):
        return self.page.locator(".messages > li.msg .body").evaluate_all(
            "els => els.map(el => el.textContent)")

    def seqs(self):
        return self.messages.evaluate_all("els => els.map(el => Number(el.dataset.seq))")

    def expect_bodies(self, expected):
        """Wait until exactly ``expected`` is shown, in this order, with nothing pending."""
        expect(self.messages).to_have_count(len(expected))
        expect(self.pending).to_have_count(0)
        assert self.bodies() == expected

    def check_clean(self):
        """No dialog, no uncaught error, no CSP violation on this page."""
        assert self.dialogs == [] and self.errors == [] and self.csp_violations == []

    def close(self):
        self.context.close()


@pytest.fixture
def open_page(browser, server):
    """Make ``ChatPage``s (on this module's server unless told); each must end up clean."""
    pages = []

    def make(session_key=None, on=None, **options):
        page = ChatPage(browser, on or server, session_key, **options)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()
    for page in pages:
        page.check_clean()


def test_two_users_in_two_browsers_chat_both_ways(server, make_users, make_room, open_page):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="duo")
    room = make_room()
    a, b = open_page(alice_key), open_page(bob_key)
    response = a.open_room(room)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    b.open_room(room)

    a.send("hello bob")
    b.expect_bodies(["hello bob"])
    b.send("hi alice\nhow are you?")  # Shift+Enter made a new line; Enter sent it
    expected = ["hello bob", "hi alice\nhow are you?"]
    a.expect_bodies(expected)
    b.expect_bodies(expected)
    expect(a.messages.first).to_have_class(re.compile(r"\bmine\b"))
    expect(b.messages.first).not_to_have_class(re.compile(r"\bmine\b"))
    expect(a.messages.first.locator("strong")).to_have_text(alice)
    # The socket connected under connect-src 'self': no violation was reported (check_clean).


def test_typing_and_presence_show_up(server, make_users, make_room, open_page):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="presence")
    room = make_room()
    a = open_page(alice_key)
    a.open_room(room)
    expect(a.presence).to_have_text([f"{alice} (you)"])
    b = open_page(bob_key)
    b.open_room(room)
    expect(a.presence).to_have_text(sorted([f"{alice} (you)", bob]))
    expect(b.presence).to_have_text(sorted([alice, f"{bob} (you)"]))

    b.page.get_by_label("Message", exact=True).press_sequentially("I am writi")
    expect(a.typing).to_have_text(f"{bob} is typing…")
    expect(b.typing).to_have_text("")  # not told about oneself
    expect(a.typing).to_have_text("", timeout=6_000)  # gone about 3 s after the last signal

    b.close()
    expect(a.presence).to_have_text([f"{alice} (you)"])


def test_a_message_with_html_shows_as_text_and_runs_nothing(server, make_users, make_room, open_page):
    (_, alice_key), (_, bob_key) = make_users(2, prefix="xss")
    room = make_room()
    a, b = open_page(alice_key), open_page(bob_key)
    a.open_room(room)
    b.open_room(room)
    a.send(XSS)
    for page in (a, b):
        page.expect_bodies([XSS])
    b.page.reload()  # and as the server renders it into the page
    b.online()
    b.expect_bodies([XSS])
    for page in (a, b):
        page.page.wait_for_timeout(300)  # an <img src=x> would have failed to load by now
        assert page.page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.dialogs == []


def test_the_page_reconnects_after_a_server_restart_and_shows_every_message_once(
        start_server, make_users, make_room, open_page, django_db_blocker):
    own = start_server()  # a gunicorn of its own: this test stops and restarts it
    (_, alice_key), (_, bob_key) = make_users(2, prefix="restart")
    room = make_room()
    a, b = open_page(alice_key, on=own), open_page(bob_key, on=own)
    a.open_room(room)
    b.open_room(room)
    a.send("1 before the restart")
    b.expect_bodies(["1 before the restart"])
    b.send("2 before the restart")
    a.expect_bodies(["1 before the restart", "2 before the restart"])

    def while_down():
        for page in (a, b):  # both got 1001 and are retrying with backoff
            expect(page.status).to_have_attribute("data-state", "reconnecting")
        a.send("3 typed while the server was down")
        expect(a.pending).to_have_count(1)
        expect(a.pending).to_have_class(re.compile(r"\bpending\b"))
        expect(a.pending.locator(".body")).to_have_text("3 typed while the server was down")
        a.page.wait_for_timeout(500)
        expect(a.pending).to_have_count(1)  # still pending: nobody could confirm it

    own.restart(while_down=while_down)  # SIGTERM, then a new gunicorn on the same port
    assert "closing 2 sockets with 1001" in own.log()
    for page in (a, b):
        page.online(timeout=RECONNECT_MS)
    b.send("4 after the restart")
    expected = ["1 before the restart", "2 before the restart",
                "3 typed while the server was down", "4 after the restart"]
    for page in (a, b):
        page.expect_bodies(expected)
        assert page.seqs() == [1, 2, 3, 4]
    assert len(a.sent("send", body="3 typed while the server was down")) == 1  # once, once back

    from chat.models import Message

    with orm(django_db_blocker):
        stored = list(Message.objects.filter(room__slug=room).order_by("seq").values_list("body", flat=True))
    assert stored == expected  # the pending message was stored once


def test_a_message_lost_with_a_killed_worker_is_resent_with_the_same_ref_and_stored_once(
        start_server, make_users, make_room, open_page, django_db_blocker):
    own = start_server(WEB_CONCURRENCY=1)  # one worker: the one that holds the page's socket
    [(_, key)] = make_users(1, prefix="resend")
    room = make_room()
    page = open_page(key, on=own)
    page.open_room(room)
    [worker] = own.worker_pids()
    os.kill(worker, signal.SIGSTOP)  # frozen: what the page sends now is never read
    try:
        page.send("lost with the worker")
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not page.sent("send") and time.monotonic() < deadline:
            page.page.wait_for_timeout(50)  # lets Playwright report the frame
        expect(page.pending).to_have_count(1)
    finally:
        os.kill(worker, signal.SIGKILL)  # the frame dies with it; gunicorn starts a new worker
    page.online(timeout=RECONNECT_MS)
    page.expect_bodies(["lost with the worker"])
    first, again = page.sent("send")  # sent, then resent after the reconnect...
    assert first["ref"] == again["ref"] and first["body"] == again["body"]  # ...with the same ref
    from chat.models import Message

    with orm(django_db_blocker):
        assert Message.objects.filter(room__slug=room).count() == 1


def test_a_deleted_message_vanishes_and_the_seq_gap_it_leaves_is_filled_through_history(
        server, make_users, make_room, open_page, django_db_blocker):
    [(name, key)] = make_users(1, prefix="gap")
    room = make_room(messages=3, author=name)
    page = open_page(key)
    page.open_room(room)
    assert page.bodies() == ["message 1", "message 2", "message 3"]
    from chat import publish
    from chat.db import connection_pool
    from chat.models import Message, Room

    with orm(django_db_blocker):
        second = Message.objects.get(room__slug=room, seq=2)
        Message.objects.filter(pk=second.pk).update(deleted=True)  # as the admin deletes
        try:
            publish.message_deleted(second)
        finally:
            connection_pool().close()  # publish's connection, or the test database stays in use
        # Seq 4 goes to a message deleted before anyone heard of it: the next live message
        # (seq 5) comes after a hole that only the database can explain.
        Room.objects.filter(slug=room).update(last_seq=4)
        Message.objects.create(room=second.room, seq=4, user=second.user, body="never seen",
                               deleted=True)
    page.expect_bodies(["message 1", "message 3"])  # removed live
    page.send("after the hole")
    page.expect_bodies(["message 1", "message 3", "after the hole"])
    assert page.seqs() == [1, 3, 5]
    [ask] = page.sent("history")  # the page asked about seq 4, once
    assert (ask["before"], ask["limit"]) == (5, 1)


def test_scrolling_back_loads_older_messages_until_the_first(server, make_users, make_room, open_page):
    [(name, key)] = make_users(1, prefix="scroller")
    room = make_room(messages=120, author=name)
    page = open_page(key)
    page.open_room(room)
    assert page.seqs() == list(range(71, 121))  # the page came with the newest 50
    expect(page.page.locator(".beginning")).to_be_hidden()
    log = page.page.locator(".log")
    log.evaluate("el => el.scrollTo(0, 0)")
    expect(page.messages).to_have_count(100)
    assert log.evaluate("el => el.scrollTop") > 500  # kept the reader's place, not thrown to the top
    log.evaluate("el => el.scrollTo(0, 0)")
    expect(page.messages).to_have_count(120)
    assert page.seqs() == list(range(1, 121))
    assert page.bodies()[0] == "message 1"
    expect(page.page.locator(".beginning")).to_be_visible()
    expect(page.page.locator(".older")).to_be_hidden()


def test_unread_messages_are_counted_in_the_title_while_the_tab_is_hidden(
        server, make_users, make_room, open_page):
    (_, alice_key), (_, bob_key) = make_users(2, prefix="unread")
    room = make_room()
    a, b = open_page(alice_key), open_page(bob_key)
    a.open_room(room)
    b.open_room(room)
    title = a.page.title()
    set_hidden = """hidden => {
        Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
        Object.defineProperty(document, "visibilityState",
                              {value: hidden ? "hidden" : "visible", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    a.page.evaluate(set_hidden, True)
    b.send("one")
    b.send("two")
    a.expect_bodies(["one", "two"])
    expect(a.page).to_have_title(f"(2) {title}")
    a.page.evaluate(set_hidden, False)
    expect(a.page).to_have_title(title)


def test_signing_out_elsewhere_sends_the_page_to_the_login_page_and_back(
        server, make_room, open_page):
    room = make_room()
    page = open_page()
    username = f"signup{os.getpid()}"
    page.page.goto(f"{server.url}/accounts/signup/")  # the real forms, no cookie planted
    page.page.locator("#id_username").fill(username)
    page.page.locator("#id_password1").fill(PASSWORD)
    page.page.locator("#id_password2").fill(PASSWORD)
    page.page.get_by_role("button", name="Create account").click()
    expect(page.page.get_by_role("heading", name=f"Welcome, {username}")).to_be_visible()
    page.open_room(room)

    other_tab = page.context.new_page()  # the same browser: logging out there ends this session
    other_tab.goto(f"{server.url}/rooms/")
    other_tab.get_by_role("button", name="Log out").click()
    expect(other_tab).to_have_url(re.compile(r"/accounts/login/$"))
    other_tab.close()

    # The server closes the page's open socket with 4401 "signed out" (README, "Who may stay
    # connected"), as it would close a new one at the handshake: the page goes to log in.
    expect(page.page).to_have_url(f"{server.url}/accounts/login/?next=%2Frooms%2F{room}%2F")
    page.page.locator("#id_username").fill(username)
    page.page.locator("#id_password").fill(PASSWORD)
    page.page.get_by_role("button", name="Log in").click()
    expect(page.page).to_have_url(f"{server.url}/rooms/{room}/")
    page.online()


def test_a_room_made_with_the_form_shows_a_conversation_of_three(
        server, make_users, open_page, django_db_blocker, tmp_path):
    """Also the README's screenshot: saved to $CHAT_SCREENSHOT_PATH by bench/screenshot.py."""
    from django.contrib.auth import get_user_model

    people = make_users(3, prefix="shot")
    names = ["ada", "grace", "linus"]
    with orm(django_db_blocker):  # friendlier names; the sessions stay valid
        for (made, _), name in zip(people, names):
            get_user_model().objects.filter(username=made).update(username=name)
    ada, grace, linus = (open_page(key, color_scheme="light") for _, key in people)
    ada.page.goto(f"{server.url}/rooms/new/")
    ada.page.locator("#id_name").fill("Book club")
    ada.page.get_by_role("button", name="Create room").click()
    expect(ada.page.get_by_role("heading", name="Book club", exact=True)).to_be_visible()
    slug = ada.page.url.rstrip("/").rsplit("/", 1)[1]
    ada.online()
    grace.open_room(slug)
    linus.open_room(slug)
    conversation = [
        (ada, "Welcome to the book club! This month: The Left Hand of Darkness."),
        (grace, "Finished it on the train. The chapter on the Ice was unforgettable."),
        (linus, "I'm halfway.\nNo spoilers, please!"),
        (ada, "Deal. Shall we meet on Thursday at 7?"),
        (grace, "Thursday works for me."),
    ]
    bodies = []
    for person, text in conversation:
        person.send(text)
        bodies.append(text)
        ada.expect_bodies(bodies)
    linus.page.get_by_label("Message", exact=True).press_sequentially("Thursday")
    expect(ada.typing).to_have_text("linus is typing…")
    expect(ada.presence).to_have_text(["ada (you)", "grace", "linus"])
    ada.page.evaluate("document.activeElement.blur()")  # no focus ring in the picture
    shot = ada.page.screenshot(path=tmp_path / "screenshot-room.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOT_ENV):
        target = Path(os.environ[SCREENSHOT_ENV])
        target = target if target.is_absolute() else BASE_DIR / target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shot)
