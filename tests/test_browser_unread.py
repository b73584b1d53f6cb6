"""Unread counts, the "New messages" line and mentions in a real Chromium (tests/test_browser.py).

One person with two pages: the start page, whose counts and badge follow the user's channel,
and the room page, whose reading moves the marker.
"""
import os
import re
from pathlib import Path

import pytest

from chat.models import Mention, ReadMarker
from tests.live import BASE_DIR
# The fixtures are imported to be found here: browser, make_room, make_users, open_page.
from tests.test_browser import (SCREENSHOT_ENV, browser, expect, make_room,  # noqa: F401
                                make_users, open_page, orm)

#: Set by bench/screenshot.py's features shot: where to save docs/screenshot-features.png.
FEATURES_SHOT_ENV = "CHAT_FEATURES_SCREENSHOT_PATH"


@pytest.fixture(scope="module")
def server(start_server):
    """This module's gunicorn, two workers: the two pages may be served by different ones."""
    return start_server(WEB_CONCURRENCY=2)


def open_home(page):
    """Open the start page and wait until its channel is connected."""
    with page.explained():
        page.page.goto(f"{page.server.url}/")
        expect(page.page.locator("#user-channel")).to_have_attribute("data-state", "online")


def badge(page, room):
    return page.page.locator(f'[data-unread-room="{room}"]')


def to_bottom(page):
    page.page.locator(".log").evaluate("log => log.scrollTop = log.scrollHeight")


def test_reading_a_room_clears_its_count_live_on_another_page_after_the_new_messages_line(
        server, make_users, make_room, open_page, django_db_blocker):
    (reader, reader_key), (author, _) = make_users(2, prefix="bunread")
    room = make_room(messages=40, author=author)
    home, here = open_page(reader_key), open_page(reader_key)
    open_home(home)
    expect(badge(home, room)).to_have_text("40")
    here.open_room(room)
    line = here.page.locator(".messages > li.unread-line")
    expect(line).to_have_text("New messages")
    expect(line).to_be_in_viewport()  # entered at the line, not at the bottom
    assert here.page.locator(".messages > li.unread-line + li.msg").get_attribute("data-seq") == "1"
    assert here.sent("read") == []  # the newest message is not on screen yet
    to_bottom(here)
    expect(badge(home, room)).to_be_hidden()  # the other page heard the read
    assert [frame["seq"] for frame in here.sent("read")] == [40]
    with orm(django_db_blocker):
        assert ReadMarker.objects.get(user__username=reader, room__slug=room).last_read == 40
    expect(line).to_be_visible()  # the line stays while the reader is on the page


def test_a_mention_is_highlighted_and_counted_in_the_header_live_and_on_the_next_visit(
        server, make_users, make_room, open_page, django_db_blocker, tmp_path):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="bmention")
    room = make_room()
    a, b = open_page(alice_key), open_page(bob_key)
    a.open_room(room)
    a.send("Morning! Has anyone read the draft?")
    a.expect_bodies(["Morning! Has anyone read the draft?"])
    expect(a.page.locator(".user-channel .mentions")).to_be_hidden()
    open_home(a)  # alice leaves the room; her marker is at her own message
    offered = a.page.evaluate("'Notification' in window && Notification.permission === 'default'")
    expect(a.page.get_by_role("button", name="Notify me of mentions")).to_be_visible(visible=offered)

    b.open_room(room)
    b.send("Yes, comments are in the doc.")
    b.send(f"@{alice} could you check section 2 before noon? Thanks @nobody.")
    b.expect_bodies(["Morning! Has anyone read the draft?", "Yes, comments are in the doc.",
                     f"@{alice} could you check section 2 before noon? Thanks @nobody."])
    first = b.messages.nth(1)
    first.get_by_role("button", name="Edit").click()
    first.get_by_label("Edit message").fill("Yes, my comments are in the doc.")
    first.get_by_label("Edit message").press("Enter")
    expect(first.locator(".edited")).to_have_text("(edited)")
    # Highlighted for everyone, as text: bob's page marks both names, none of them his own.
    expect(b.page.locator(".messages mark.mention")).to_have_text([f"@{alice}", "@nobody"])

    badge = a.page.locator(".user-channel .mentions")
    expect(badge).to_have_text("@ 1")  # live, from the channel
    a.page.reload()
    expect(badge).to_have_text("@ 1")  # and rendered by the server
    expect(badge).to_have_attribute("href", f"/rooms/{room}/#m3")
    expect(a.page.locator(f'[data-unread-room="{room}"]')).to_have_text("2")

    a.open_room(room)
    expect(a.page.locator(".messages > li.unread-line + li.msg")).to_have_attribute("data-seq", "2")
    expect(a.page.locator(".messages mark.mention.me")).to_have_text(f"@{alice}")
    expect(a.page.locator(".messages > li.msg").nth(1).locator(".edited")).to_have_text("(edited)")
    expect(badge).to_be_hidden()  # read to the end: the mention is seen
    with orm(django_db_blocker):
        assert list(Mention.objects.filter(user__username=alice).values_list("seen", flat=True)) == [True]
    a.page.evaluate("document.activeElement.blur()")
    shot = a.page.screenshot(path=tmp_path / "screenshot-features.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(FEATURES_SHOT_ENV):
        target = Path(os.environ[FEATURES_SHOT_ENV])
        target = target if target.is_absolute() else BASE_DIR / target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shot)
