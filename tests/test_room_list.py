"""The room list and the start page: 50 rooms a page, the newest activity first."""
import re
import urllib.request
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat.models import Message, Presence, Room
from tests.live import connect, join, receive_type, send

ROOM_LINK = re.compile(r'<li><a href="/rooms/([\w-]+)/">')


def listed(page):
    """The slugs of the rooms a page lists under "Rooms", in order."""
    return ROOM_LINK.findall(page.split("<h2>Rooms</h2>", 1)[1])


@pytest.fixture
def reader(client, django_user_model):
    user = django_user_model.objects.create_user("reader")
    client.force_login(user)
    return user


@pytest.fixture
def hundred_rooms(db):
    """100 rooms besides the lobby, room-000 the least recently active; newest first."""
    lobby = Room.objects.get(slug="lobby")
    start = timezone.now() - timedelta(days=1)
    Room.objects.filter(pk=lobby.pk).update(active_at=start - timedelta(minutes=1))
    Room.objects.bulk_create(Room(slug=f"room-{n:03}", name=f"Room {n:03}",
                                  active_at=start + timedelta(minutes=n)) for n in range(100))
    return [f"room-{n:03}" for n in reversed(range(100))] + ["lobby"]


@pytest.mark.parametrize("url", ["/rooms/", "/"])
def test_each_page_lists_fifty_rooms_and_the_last_one_the_rest(client, reader, hundred_rooms, url):
    pages = [client.get(url, {"page": n}).content.decode() for n in (1, 2, 3)]
    assert [listed(page) for page in pages] == [hundred_rooms[:50], hundred_rooms[50:100], ["lobby"]]
    assert '<a rel="next" href="?page=2">Next</a>' in pages[0] and 'rel="prev"' not in pages[0]
    assert '<a rel="prev" href="?page=1">Previous</a>' in pages[1]
    assert '<a rel="next" href="?page=3">Next</a>' in pages[1]
    assert '<span class="page-number">Page 3 of 3</span>' in pages[2] and 'rel="next"' not in pages[2]


@pytest.mark.parametrize("page, shown", [("", 1), ("0", 3), ("99", 3), ("two", 1), ("-1", 3)])
def test_a_missing_or_bad_page_number_shows_the_first_page_and_one_past_the_end_the_last(
        client, reader, hundred_rooms, page, shown):
    text = client.get("/rooms/", {"page": page}).content.decode()
    assert f'<span class="page-number">Page {shown} of 3</span>' in text


@pytest.mark.django_db
def test_a_single_page_has_no_page_links(client, reader):
    page = client.get("/rooms/").content.decode()
    assert listed(page) == ["lobby"] and 'class="pages"' not in page


@pytest.mark.django_db
def test_private_rooms_count_in_the_pages_of_their_members_only(client, reader, django_user_model):
    mine = Room.objects.create(slug="mine", name="Mine", private=True)
    mine.members.add(reader)
    Room.objects.create(slug="theirs", name="Theirs", private=True)
    assert sorted(listed(client.get("/rooms/").content.decode())) == ["lobby", "mine"]


@pytest.mark.django_db
def test_a_stored_message_moves_its_room_to_the_top_in_the_same_update(reader, hundred_rooms):
    oldest = Room.objects.get(slug="room-000")
    with CaptureQueriesContext(connection) as queries:
        message, created = Message.objects.store(oldest.pk, reader, "news", "ref-1")
    assert created and len(queries.captured_queries) <= 2  # PREPARE once, then EXECUTE: no extra query
    oldest.refresh_from_db()
    assert oldest.active_at == message.created and oldest.last_seq == 1
    assert Room.objects.order_by("-active_at").first() == oldest


def test_only_the_rooms_on_the_page_are_asked_about_presence(client, reader, hundred_rooms):
    Presence.objects.create(room="lobby", username="zoe", worker="h:1")  # on page 3
    Presence.objects.create(room="room-099", username="amy", worker="h:1")  # on page 1
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/rooms/").content.decode()
    [presence] = [q["sql"] for q in queries.captured_queries if '"chat_presence"' in q["sql"]]
    assert "'room-099'" in presence and "'room-050'" in presence
    assert "'room-049'" not in presence and "'lobby'" not in presence
    assert "online: amy" in page and "zoe" not in page


@pytest.mark.django_db
def test_the_start_page_costs_the_same_queries_for_one_room_or_a_hundred(
        client, reader, django_assert_max_num_queries):
    with CaptureQueriesContext(connection) as few:
        client.get("/")
    Room.objects.bulk_create(Room(slug=f"more-{n}", name=f"More {n}") for n in range(100))
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get("/")


# Live: a message sent over a real socket brings its room to the top of everyone's list.


def test_a_room_with_a_new_message_comes_first_on_the_live_list(server, make_users, make_room):
    [(name, key)] = make_users(1, prefix="lister")
    quiet, busy = make_room(), make_room()
    ws = connect(server, key)
    try:
        join(ws, quiet)
        send(ws, type="send", room=quiet, body="wake up", ref="w1")
        receive_type(ws, "message")
    finally:
        ws.close()
    request = urllib.request.Request(server.url + "/rooms/", headers={"Cookie": f"sessionid={key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        rooms = listed(response.read().decode())
    assert rooms[0] == quiet and rooms.index(busy) == 1  # busy is newer, but quiet just spoke
