"""The room page in a real Chromium with JavaScript off: it reads and posts, and the page
with JavaScript in the same room sees the post live (tests/test_browser.py has the set-up)."""
import re

import pytest

# Its fixtures too, used by name: one Chromium, pages that must end clean, ORM between calls.
from tests.test_browser import PASSWORD, browser, make_room, make_users, open_page, orm  # noqa: F401

try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture skips or fails and says why
    expect = None

NOJS_NOTE = ("JavaScript is off: Send posts your message and reloads the page, and new messages "
             "from others show when the page reloads. Show new messages")


@pytest.fixture(scope="module")
def server(start_server):
    """Two workers: the form's post and the live page's socket may be on either."""
    return start_server(WEB_CONCURRENCY=2)


@pytest.fixture(scope="module")
def password_hash(django_db_blocker):
    from django.contrib.auth.hashers import make_password

    with orm(django_db_blocker):
        return make_password(PASSWORD)


def log_in(page, server, room, username):
    """Open the room signed out: the login form, then back to the room."""
    page.page.goto(f"{server.url}/rooms/{room}/")
    expect(page.page).to_have_url(f"{server.url}/accounts/login/?next=/rooms/{room}/")
    page.page.locator("#id_username").fill(username)
    page.page.locator("#id_password").fill(PASSWORD)
    page.page.get_by_role("button", name="Log in").click()
    expect(page.page).to_have_url(f"{server.url}/rooms/{room}/")


def test_without_javascript_the_page_reads_and_posts_and_a_live_page_sees_it(
        server, make_users, make_room, open_page, password_hash):
    (reader, _), (_, live_key) = (make_users(1, prefix="nojs", password=password_hash)
                                  + make_users(1, prefix="withjs"))
    room = make_room(messages=40, author=reader)  # more than the log shows at once
    older = [f"message {seq}" for seq in range(1, 41)]
    plain = open_page(java_script_enabled=False)
    log_in(plain, server, room, reader)
    expect(plain.messages).to_have_count(40)
    assert plain.bodies() == older
    expect(plain.page.locator("#composer-nojs")).to_have_text(NOJS_NOTE)
    expect(plain.page.locator("#composer-hint")).to_be_hidden()  # "Enter sends" is the script's
    expect(plain.page.locator(".status")).to_be_hidden()  # "Connecting…" would never change
    live = open_page(live_key)
    live.open_room(room)

    field = plain.page.get_by_label("Message", exact=True)
    expect(field).to_be_enabled()
    field.fill("posted without script\non two lines")
    plain.page.get_by_role("button", name="Send").click()
    expect(plain.page).to_have_url(f"{server.url}/rooms/{room}/#m41")
    assert plain.bodies() == older + ["posted without script\non two lines"]
    expect(plain.messages.last).to_be_in_viewport()  # the anchor scrolled the log to it
    expect(field).to_have_value("")
    with live.explained():
        live.expect_bodies(older + ["posted without script\non two lines"])

    live.send("seen live, answered live")
    live.expect_bodies(older + ["posted without script\non two lines", "seen live, answered live"])
    plain.page.get_by_role("link", name="Show new messages").click()
    expect(plain.page).to_have_url(f"{server.url}/rooms/{room}/#end")
    expect(plain.messages).to_have_count(42)
    expect(plain.messages.last.locator(".body")).to_have_text("seen live, answered live")
    expect(plain.messages.last).to_be_in_viewport()


def test_without_javascript_a_blank_message_is_refused_on_the_page(
        server, make_users, make_room, open_page, password_hash):
    [(name, _)] = make_users(1, prefix="nojsblank", password=password_hash)
    room = make_room()
    plain = open_page(java_script_enabled=False)
    log_in(plain, server, room, name)
    plain.page.get_by_label("Message", exact=True).fill("   ")
    with plain.page.expect_response(f"{server.url}/rooms/{room}/messages/") as answer:
        plain.page.get_by_role("button", name="Send").click()
    assert answer.value.status == 400
    expect(plain.page.get_by_role("alert")).to_have_text(
        "body must be text of 1 to 4000 characters, not only white space")
    expect(plain.messages).to_have_count(0)


def test_with_javascript_send_goes_over_the_socket_and_never_posts_the_form(
        server, make_users, make_room, open_page, django_db_blocker):
    [(_, key)] = make_users(1, prefix="jsform")
    room = make_room()
    page = open_page(key)
    posts = []
    page.page.on("request", lambda request: posts.append(request.url)
                 if request.method == "POST" else None)
    page.open_room(room)
    expect(page.page.locator("#composer-hint")).to_have_text("Enter sends, Shift+Enter starts a new line.")
    expect(page.page.get_by_label("Message", exact=True)).to_have_attribute(
        "aria-describedby", "composer-hint")
    page.page.get_by_label("Message", exact=True).fill("clicked, not posted")
    page.page.get_by_role("button", name="Send").click()
    page.expect_bodies(["clicked, not posted"])
    page.send("entered, not posted")
    page.expect_bodies(["clicked, not posted", "entered, not posted"])
    expect(page.page).to_have_url(re.compile(rf"/rooms/{room}/$"))
    assert posts == [] and len(page.sent("send")) == 2
    from chat.models import Message

    with orm(django_db_blocker):
        assert Message.objects.filter(room__slug=room).count() == 2
