"""Edit and delete in the browser: live on another page, after a reload, and after being away."""
import re

import pytest

from tests.live import connect, join, receive_type, send
# The fixtures are imported to be found here: browser, make_room, make_users, open_page.
from tests.test_browser import (RECONNECT_MS, browser, expect, make_room,  # noqa: F401
                                make_users, open_page)

DELETED = "Message deleted"


@pytest.fixture(scope="module")
def server(start_server):
    """This module's gunicorn, two workers: the two pages may be served by different ones."""
    return start_server(WEB_CONCURRENCY=2)


def row(page, n):
    """The n-th message of the page (placeholders are not messages)."""
    return page.messages.nth(n)


def test_an_edit_and_a_deletion_show_live_on_a_second_page_and_after_a_reload(
        server, make_users, make_room, open_page):
    (_, alice_key), (_, bob_key) = make_users(2, prefix="bredit")
    room = make_room()
    a, b = open_page(alice_key), open_page(bob_key)
    a.open_room(room)
    b.open_room(room)
    a.send("helo bob")
    a.send("a regrettable message")
    b.expect_bodies(["helo bob", "a regrettable message"])
    expect(b.page.get_by_role("button", name="Edit")).to_have_count(0)  # not bob's to change

    first = row(a, 0)
    first.get_by_role("button", name="Edit").click()
    editor = first.get_by_label("Edit message")
    expect(editor).to_have_value("helo bob")
    editor.fill("never saved")
    editor.press("Escape")  # cancels: the editor goes, the body stays
    expect(editor).to_have_count(0)
    expect(first.locator(".body")).to_have_text("helo bob")
    first.get_by_role("button", name="Edit").click()
    first.get_by_label("Edit message").fill("hello bob")
    first.get_by_label("Edit message").press("Enter")
    for page in (a, b):
        expect(row(page, 0).locator(".body")).to_have_text("hello bob")
        expect(row(page, 0).locator(".edited")).to_have_text("(edited)")
    expect(first.get_by_label("Edit message")).to_have_count(0)

    row(a, 1).get_by_role("button", name="Delete").click()
    for page in (a, b):
        page.expect_bodies(["hello bob"])
        expect(page.page.locator(".messages > li.deleted")).to_have_text([DELETED])
    assert b.sent("edit") == [] and [f["seq"] for f in a.sent("delete")] == [2]

    b.page.reload()  # as the server renders the room, and the changes its join brings
    b.online()
    b.expect_bodies(["hello bob"])
    expect(row(b, 0).locator(".edited")).to_have_text("(edited)")
    expect(b.page.locator(".messages > li.deleted")).to_have_text([DELETED])
    assert b.page.locator(".messages > li").evaluate_all(
        "els => els.map(el => el.className)") == ["msg", "deleted"]  # in seq order
    rejoin = b.sent("join")[-1]  # the reloaded page's
    assert rejoin["changes_since"] == 0  # the page knew no change: it asked for all of them


def test_changes_made_while_a_page_was_offline_show_when_it_resumes(
        server, make_users, make_room, open_page):
    (alice, alice_key), (_, bob_key) = make_users(2, prefix="brresume")
    room = make_room(messages=3, author=alice)
    b = open_page(bob_key)
    b.open_room(room)
    b.expect_bodies(["message 1", "message 2", "message 3"])
    b.context.set_offline(True)
    expect(b.status).to_have_attribute("data-state", "reconnecting")
    ws = connect(server, alice_key)  # alice, from another device
    join(ws, room)
    for frame in ({"type": "edit", "seq": 1, "body": "edited while bob was away"},
                  {"type": "delete", "seq": 3}):
        send(ws, room=room, ref=frame["type"], **frame)
        assert receive_type(ws, "message_" + frame["type"].rstrip("e") + "ed")["ref"] == frame["type"]
    ws.close()
    b.context.set_offline(False)
    b.online(timeout=RECONNECT_MS)
    b.expect_bodies(["edited while bob was away", "message 2"])
    expect(row(b, 0).locator(".edited")).to_have_text("(edited)")
    expect(b.page.locator(".messages > li.deleted")).to_have_text([DELETED])
    joins = b.sent("join")
    assert [f["changes_since"] for f in joins] == [0, 0] and joins[1]["since"] == 3
    assert re.fullmatch(r"edited .+", row(b, 0).locator(".edited").get_attribute("title"))
