"""Direct messages in a real Chromium: a name in the presence list leads to a room of two."""
import re

import pytest

# The fixtures are imported to be found here: browser, make_room, make_users, open_page.
from tests.test_browser import (browser, expect, make_room, make_users, open_page,  # noqa: F401
                                orm)


@pytest.fixture(scope="module")
def server(start_server):
    """This module's gunicorn: two workers, as a deployment has."""
    return start_server(WEB_CONCURRENCY=2)


def test_a_name_in_the_presence_list_starts_a_conversation_the_other_sees_and_joins(
        server, make_users, make_room, open_page, django_db_blocker):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="dmpage")
    room = make_room()
    a, b = open_page(alice_key), open_page(bob_key)
    a.open_room(room)
    b.open_room(room)
    expect(a.presence).to_have_text(sorted([f"{alice} (you)", bob]))
    expect(a.presence.get_by_role("link")).to_have_count(1)  # not oneself

    a.presence.get_by_role("link", name=bob, exact=True).click()
    expect(a.page.get_by_role("heading", name=f"Direct message with {bob}")).to_be_visible()
    a.page.get_by_role("button", name="Start the conversation").click()
    expect(a.page).to_have_url(re.compile(r"/rooms/dm-[0-9a-f]{16}/#end$"))
    a.online()
    slug = a.page.url.split("/")[4]

    b.page.goto(f"{server.url}/")  # bob's start page lists it, named after alice
    direct = b.page.locator("ul.direct").get_by_role("link", name=alice, exact=True)
    expect(direct).to_have_attribute("href", f"/rooms/{slug}/")
    direct.click()
    b.online()
    expect(b.presence).to_have_text(sorted([alice, f"{bob} (you)"]))

    a.send("just between us")
    b.expect_bodies(["just between us"])
    b.send("agreed")
    a.expect_bodies(["just between us", "agreed"])

    from chat.models import DirectConversation

    with orm(django_db_blocker):
        conversation = DirectConversation.objects.select_related("room").get(room__slug=slug)
        assert {conversation.user_low.username, conversation.user_high.username} == {alice, bob}
        assert conversation.room.private and conversation.room.last_seq == 2

    a.page.goto(f"{server.url}/rooms/{room}/")  # back in the public room, the same name
    a.online()
    a.presence.get_by_role("link", name=bob, exact=True).click()
    expect(a.page).to_have_url(f"{server.url}/rooms/{slug}/")  # reopens it: no second room
    a.online()
    a.expect_bodies(["just between us", "agreed"])
