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
