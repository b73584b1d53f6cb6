"""Direct messages (chat/direct.py): one private room per pair, started from a username."""
import urllib.parse

import gevent
import pytest
from django.test import Client

from chat import direct, throttle
from chat.models import DirectConversation, Room
from tests.live import collect_messages, connect, join, receive, receive_type, send
from tests.test_room_post import FormClient

# In-process: the pages and the rules, through Django's test client.


def pair_of(*users):
    """The conversations of exactly these two users."""
    low, high = sorted(users, key=lambda user: user.pk)
    return DirectConversation.objects.filter(user_low=low, user_high=high)


@pytest.mark.django_db
def test_posting_a_username_makes_a_private_room_of_the_two_and_sends_them_to_it(client, alice, bob):
    response = client.post("/direct/", {"username": "bob"})
    [conversation] = pair_of(alice, bob)
    room = conversation.room
    assert response.status_code == 303 and response.url == f"/rooms/{room.slug}/#end"
    assert room.private and set(room.members.all()) == {alice, bob}
    assert room.slug.startswith("dm-") and room.name == "alice and bob"


@pytest.mark.django_db
def test_the_second_start_of_a_pair_from_either_side_opens_the_same_room(client, alice, bob):
    first = client.post("/direct/", {"username": "bob"}).url
    client.force_login(bob)
    assert client.post("/direct/", {"username": "alice"}).url == first
    assert pair_of(alice, bob).count() == 1 and Room.objects.filter(slug__startswith="dm-").count() == 1


@pytest.mark.django_db
def test_a_start_that_loses_the_race_catches_the_integrity_error_and_returns_the_winners_room(
        alice, bob, monkeypatch):
    winner, created = direct.start(alice, bob)
    assert created
    real_find, calls = direct.find, []

    def find(*users):  # this request looked before the winner committed, then looks again
        calls.append(users)
        return None if len(calls) == 1 else real_find(*users)

    monkeypatch.setattr(direct, "find", find)
    room, created = direct.start(bob, alice)
    assert (room, created) == (winner, False) and len(calls) == 2
    assert Room.objects.filter(slug__startswith="dm-").count() == 1  # the loser's room rolled back


@pytest.mark.django_db
def test_the_database_refuses_a_pair_out_of_order_or_with_oneself(alice, bob):
    from django.db import IntegrityError, transaction

    low, high = sorted([alice, bob], key=lambda user: user.pk)
    for first, second in ((high, low), (alice, alice)):
        room = Room.objects.create(slug=f"raw-{first.pk}-{second.pk}", name="raw", private=True)
        with pytest.raises(IntegrityError), transaction.atomic():
            DirectConversation.objects.create(room=room, user_low=first, user_high=second)


@pytest.mark.django_db
@pytest.mark.parametrize("username, status, message", [
    ("alice", 400, "You can&#x27;t start a conversation with yourself."),
    ("nobody", 404, "There is no user named “nobody”."),
    ("carol", 404, "“carol” can&#x27;t receive messages: their account is inactive."),
    ("  ", 400, "Enter the username of the person to write to."),
])
def test_no_conversation_with_oneself_an_unknown_or_an_inactive_user(
        client, alice, django_user_model, username, status, message):
    django_user_model.objects.create_user("carol", is_active=False)
    response = client.post("/direct/", {"username": username})
    assert response.status_code == status
    assert message in response.content.decode()
    assert not DirectConversation.objects.exists() and not Room.objects.filter(private=True).exists()
    if username.strip():  # the link from a name shows the same reason
        assert message in client.get(f"/direct/{username}/").content.decode()


@pytest.mark.django_db
def test_the_link_from_a_name_asks_first_and_creates_nothing(client, alice, bob):
    page = client.get("/direct/bob/")
    text = page.content.decode()
    assert page.status_code == 200 and "<h1>Direct message with bob</h1>" in text
    assert '<input type="hidden" name="username" value="bob">' in text
    assert 'name="csrfmiddlewaretoken"' in text and 'action="/direct/"' in text
    assert not DirectConversation.objects.exists()


@pytest.mark.django_db
def test_the_link_from_a_name_opens_an_existing_conversation_at_once(client, alice, bob):
    room, _ = direct.start(bob, alice)
    response = client.get("/direct/bob/")
    assert response.status_code == 302 and response.url == f"/rooms/{room.slug}/"


@pytest.mark.django_db
def test_starting_needs_the_csrf_token(alice, bob):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post("/direct/", {"username": "bob"}).status_code == 403
    assert not DirectConversation.objects.exists()


@pytest.mark.django_db
def test_a_new_conversation_counts_against_the_room_creation_limit(client, alice, bob, monkeypatch):
    monkeypatch.setattr(throttle, "address_limit", lambda name: throttle.AddressLimit(0, 60))
    response = client.post("/direct/", {"username": "bob"})
    assert response.status_code == 429 and response["Retry-After"] == "1"
    assert "Too many rooms were created from your address. Try again later." in response.content.decode()
    assert not DirectConversation.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/rooms/", "/direct/"])
def test_both_see_the_conversation_under_direct_messages_named_after_the_other(
        client, alice, bob, url):
    room, _ = direct.start(alice, bob)
    for me, other in ((alice, "bob"), (bob, "alice")):
        client.force_login(me)
        page = client.get(url).content.decode()
        assert "<h1>Direct messages</h1>" in page or "<h2>Direct messages</h2>" in page
        assert f'<li><a href="/rooms/{room.slug}/">{other}</a>' in page
        assert "alice and bob" not in page  # the room's own name is the admin's


@pytest.mark.django_db
def test_a_conversation_is_not_listed_among_the_rooms_nor_shown_to_others(
        client, alice, bob, django_user_model):
    room, _ = direct.start(alice, bob)
    page = client.get("/rooms/").content.decode()
    rooms_part = page.split("<h2>Rooms</h2>", 1)[1]
    assert room.slug not in rooms_part and "(private)" not in rooms_part
    client.force_login(django_user_model.objects.create_user("carol"))
    for url in ("/", "/rooms/", "/direct/"):
        assert room.slug not in client.get(url).content.decode()
    assert client.get(f"/rooms/{room.slug}/").status_code == 403


@pytest.mark.django_db
def test_a_user_without_conversations_is_told_how_to_start_one(client, alice):
    page = client.get("/").content.decode()
    assert "No direct messages yet. Pick a name in a room’s “Online” list, or write to someone here." in page
    assert '<form method="post" action="/direct/" class="direct-start"' in page


@pytest.mark.django_db
def test_the_direct_list_pages_fifty_at_a_time_newest_first(client, alice, django_user_model):
    from datetime import timedelta

    from django.utils import timezone

    others = django_user_model.objects.bulk_create(
        django_user_model(username=f"friend{n:02}") for n in range(51))
    start = timezone.now()
    for n, other in enumerate(others):
        room, _ = direct.start(alice, other)
        Room.objects.filter(pk=room.pk).update(active_at=start + timedelta(minutes=n))
    first = client.get("/direct/").content.decode()
    assert first.count('<li><a href="/rooms/dm-') == 50
    assert first.index(">friend50</a>") < first.index(">friend49</a>")
    assert ">friend00</a>" not in first and '<a rel="next" href="?page=2">Next</a>' in first
    second = client.get("/direct/?page=2").content.decode()
    assert second.count('<li><a href="/rooms/dm-') == 1 and ">friend00</a>" in second
    home = client.get("/").content.decode()
    assert '<a href="/direct/?page=2">More direct messages</a>' in home


@pytest.mark.django_db
def test_the_admin_lists_the_pairs_and_adds_none(client, alice, bob, django_user_model):
    direct.start(alice, bob)
    client.force_login(django_user_model.objects.create_superuser("boss", password=None))
    page = client.get("/admin/chat/directconversation/")
    assert page.status_code == 200 and "<a href=\"/admin/chat/directconversation/" in page.content.decode()
    assert "alice and bob" in page.content.decode()
    assert client.get("/admin/chat/directconversation/add/").status_code == 403


# Live: a real gunicorn (the shared one, two workers) and real sockets.


def start_form(client, other):
    """The confirmation page's form fields for a conversation with ``other``."""
    page = client.request(f"/direct/{urllib.parse.quote(other)}/")
    assert page.status == 200, page.text
    return urllib.parse.urlencode({"csrfmiddlewaretoken": page.csrf(), "username": other}).encode()


def test_concurrent_starts_from_both_sides_make_one_room(server, make_users, django_db_blocker):
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="dmrace")
    clients = [(FormClient(server, alice_key), bob), (FormClient(server, bob_key), alice)] * 4
    forms = [start_form(client, other) for client, other in clients]  # tokens first: then all at once
    jobs = [gevent.spawn(client.request, "/direct/", form) for (client, _), form in zip(clients, forms)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    answers = [job.value for job in jobs]
    assert [page.status for page in answers] == [303] * 8
    assert len({page.headers["Location"] for page in answers}) == 1
    with django_db_blocker.unblock():
        rooms = list(Room.objects.filter(members__username__in=[alice, bob], slug__startswith="dm-")
                     .distinct())
        assert len(rooms) == 1 and DirectConversation.objects.filter(room=rooms[0]).count() == 1
        assert sorted(rooms[0].members.values_list("username", flat=True)) == sorted([alice, bob])
    assert answers[0].headers["Location"] == f"/rooms/{rooms[0].slug}/#end"
    assert server.log().count(f"direct conversation {rooms[0].slug} of ") == 1  # created once


@pytest.fixture
def conversation(server, make_users, django_db_blocker):
    """Two users and their conversation's slug, started through the real form."""
    (alice, alice_key), (bob, bob_key) = make_users(2, prefix="dmchat")
    client = FormClient(server, alice_key)
    answer = client.request("/direct/", start_form(client, bob))
    assert answer.status == 303
    slug = answer.headers["Location"].split("/")[2]
    return slug, (alice, alice_key), (bob, bob_key)


def test_both_members_join_the_conversation_and_chat_both_ways(server, conversation):
    slug, (alice, alice_key), (bob, bob_key) = conversation
    a, b = connect(server, alice_key), connect(server, bob_key)
    try:
        assert join(a, slug)["messages"] == []
        assert join(b, slug)["presence"] == sorted([alice, bob])
        send(a, type="send", room=slug, body="hi bob, just us", ref="a1")
        heard = receive_type(b, "message")
        assert (heard["user"], heard["body"], heard["seq"]) == (alice, "hi bob, just us", 1)
        send(b, type="send", room=slug, body="hi alice", ref="b1")
        assert [m["body"] for m in collect_messages(a, 2)] == ["hi bob, just us", "hi alice"]
    finally:
        a.close()
        b.close()


def test_a_third_user_gets_403_on_the_page_and_forbidden_on_join(server, conversation, make_users):
    slug, _, _ = conversation
    [(_, carol_key)] = make_users(1, prefix="dmthird")
    page = FormClient(server, carol_key).request(f"/rooms/{slug}/")
    assert page.status == 403 and "This room is private." in page.text
    ws = connect(server, carol_key)
    try:
        send(ws, type="join", room=slug, ref="j")
        assert receive(ws) == {"type": "error", "code": "forbidden", "ref": "j",
                               "detail": f"{slug!r} is a private room; ask a member to add you"}
    finally:
        ws.close()
