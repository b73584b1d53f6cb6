"""Plain pages, through Django's test client."""
import pytest
from django.contrib.auth import get_user_model

from chat import forms
from chat.models import Message, Room


@pytest.mark.django_db
def test_signup_creates_the_user_and_signs_them_in(client):
    response = client.post("/accounts/signup/", {
        "username": "newcomer", "password1": "a sturdy passphrase 7", "password2": "a sturdy passphrase 7"})
    assert response.status_code == 302 and response.url == "/"
    assert get_user_model().objects.filter(username="newcomer").exists()
    assert "newcomer" in client.get("/").content.decode()


@pytest.mark.django_db
def test_signup_with_mismatched_passwords_shows_the_error(client):
    response = client.post("/accounts/signup/", {
        "username": "newcomer", "password1": "a sturdy passphrase 7", "password2": "another one 8"})
    assert response.status_code == 200
    assert "The two password fields didn’t match." in response.content.decode()
    assert not get_user_model().objects.filter(username="newcomer").exists()


def test_home_sends_anonymous_users_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302 and response.url == "/accounts/login/?next=/"


@pytest.mark.django_db
def test_login_page_has_a_csrf_protected_form(client):
    page = client.get("/accounts/login/").content.decode()
    assert 'name="csrfmiddlewaretoken"' in page


# Rooms

XSS = "<img src=x onerror=alert(1)>"


def post_message(room, user, body, deleted=False):
    room.last_seq += 1
    room.save(update_fields=["last_seq"])
    return Message.objects.create(room=room, seq=room.last_seq, user=user, body=body, deleted=deleted)


@pytest.mark.parametrize("url", ["/rooms/", "/rooms/new/", "/rooms/lobby/"])
def test_room_pages_send_anonymous_users_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response.url == f"/accounts/login/?next={url}"


@pytest.mark.django_db
def test_creating_a_room_derives_the_slug_makes_the_creator_a_member_and_opens_it(client, alice):
    response = client.post("/rooms/new/", {"name": "  Book Club  "})
    assert response.status_code == 302 and response.url == "/rooms/book-club/"
    room = Room.objects.get(slug="book-club")
    assert room.name == "Book Club" and not room.private
    assert list(room.members.all()) == [alice]
    assert "<h1>Book Club</h1>" in client.get(response.url).content.decode()


@pytest.mark.django_db
def test_a_second_room_with_the_same_name_gets_a_numbered_slug(client, alice):
    client.post("/rooms/new/", {"name": "Book Club"})
    response = client.post("/rooms/new/", {"name": "Book Club"})
    assert response.url == "/rooms/book-club-2/"
    assert client.post("/rooms/new/", {"name": "book club!"}).url == "/rooms/book-club-3/"


@pytest.mark.django_db
def test_a_numbered_slug_stays_within_fifty_characters(client, alice):
    name = "a" * 49 + " b"
    assert client.post("/rooms/new/", {"name": name}).url == f"/rooms/{'a' * 49}/"
    assert client.post("/rooms/new/", {"name": name}).url == f"/rooms/{'a' * 48}-2/"


@pytest.mark.django_db
def test_a_slug_taken_between_look_up_and_insert_is_retried(client, alice, monkeypatch):
    real_free_slug = forms.free_slug
    calls = []

    def racing_free_slug(name):
        slug = real_free_slug(name)
        if not calls:
            Room.objects.create(slug=slug, name="Someone else's")
        calls.append(slug)
        return slug

    monkeypatch.setattr(forms, "free_slug", racing_free_slug)
    assert client.post("/rooms/new/", {"name": "Book Club"}).url == "/rooms/book-club-2/"
    assert calls == ["book-club", "book-club-2"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["!!!", "🎉🎉", "--"])
def test_a_name_without_letters_or_digits_is_refused_with_a_clear_error(client, alice, name):
    response = client.post("/rooms/new/", {"name": name})
    assert response.status_code == 200
    assert "Use letters or digits in the name." in response.content.decode()
    assert not Room.objects.exclude(slug="lobby").exists()


@pytest.mark.django_db
def test_a_name_whose_slug_is_a_reserved_path_word_is_refused(client, alice):
    response = client.post("/rooms/new/", {"name": "New!"})
    assert response.status_code == 200
    assert "“new” is reserved; choose another name." in response.content.decode()
    assert not Room.objects.filter(slug="new").exists()


@pytest.mark.django_db
def test_the_new_room_page_shows_the_form_not_a_room(client, alice):
    page = client.get("/rooms/new/").content.decode()
    assert 'name="name"' in page and 'name="private"' in page and 'name="csrfmiddlewaretoken"' in page


@pytest.mark.django_db
def test_the_private_checkbox_is_stored(client, alice):
    client.post("/rooms/new/", {"name": "Secret", "private": "on"})
    client.post("/rooms/new/", {"name": "Open"})
    assert Room.objects.get(slug="secret").private is True
    assert Room.objects.get(slug="open").private is False


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/rooms/", "/"])
def test_the_room_list_shows_public_rooms_and_private_rooms_only_to_members(client, alice, bob, url):
    Room.objects.create(slug="open", name="Open room")
    theirs = Room.objects.create(slug="theirs", name="Their secret", private=True)
    theirs.members.add(bob)
    mine = Room.objects.create(slug="mine", name="My secret", private=True)
    mine.members.add(alice, bob)
    page = client.get(url).content.decode()
    assert '<a href="/rooms/open/">Open room</a>' in page
    assert '<a href="/rooms/mine/">My secret</a> (private)' in page
    assert "Their secret" not in page and "/rooms/theirs/" not in page


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/rooms/", "/"])
def test_the_lobby_is_listed_for_everyone(client, alice, url):
    page = client.get(url).content.decode()
    assert '<a href="/rooms/lobby/">Lobby</a>' in page


@pytest.mark.django_db
def test_the_home_page_links_to_the_room_list_and_the_room_form(client, alice):
    page = client.get("/").content.decode()
    assert 'href="/rooms/"' in page and 'href="/rooms/new/"' in page


@pytest.mark.django_db
def test_the_room_page_of_an_unknown_slug_is_404(client, alice):
    assert client.get("/rooms/nowhere/").status_code == 404


@pytest.mark.django_db
def test_a_private_room_page_is_forbidden_to_non_members_and_open_to_members(client, alice, bob):
    room = Room.objects.create(slug="secret", name="Secret name", private=True)
    room.members.add(bob)
    response = client.get("/rooms/secret/")
    assert response.status_code == 403
    assert "This room is private." in response.content.decode()
    assert "Secret name" not in response.content.decode()
    room.members.add(alice)
    response = client.get("/rooms/secret/")
    assert response.status_code == 200 and "Secret name" in response.content.decode()


@pytest.mark.django_db
def test_the_room_page_shows_messages_oldest_first_with_author_and_time(client, alice, bob):
    room = Room.objects.get(slug="lobby")
    post_message(room, alice, "first")
    post_message(room, bob, "second")
    page = client.get("/rooms/lobby/").content.decode()
    assert page.index("first") < page.index("second")
    # Another's name links to a direct conversation with them; one's own does not.
    assert '<strong><a href="/direct/bob/" title="Direct message with bob">bob</a></strong>' in page
    assert "<strong>alice</strong>" in page and "<time datetime=" in page
    assert f'data-room="lobby" data-seq="{room.last_seq}"' in page


@pytest.mark.django_db
def test_the_room_page_shows_only_the_latest_fifty_messages(client, alice):
    room = Room.objects.get(slug="lobby")
    for n in range(1, 56):
        post_message(room, alice, f"message number {n}.")
    page = client.get("/rooms/lobby/").content.decode()
    assert "message number 5." not in page and "message number 6." in page
    assert "message number 55." in page and page.count('<span class="body">') == 50


@pytest.mark.django_db
def test_a_message_body_is_escaped_on_the_room_page(client, alice):
    post_message(Room.objects.get(slug="lobby"), alice, XSS)
    page = client.get("/rooms/lobby/").content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert XSS not in page


@pytest.mark.django_db
def test_deleted_messages_are_not_shown(client, alice):
    room = Room.objects.get(slug="lobby")
    post_message(room, alice, "kept")
    post_message(room, alice, "taken back", deleted=True)
    page = client.get("/rooms/lobby/").content.decode()
    assert "kept" in page and "taken back" not in page


@pytest.mark.django_db
def test_room_page_queries_do_not_grow_with_the_messages(client, django_user_model,
                                                         django_assert_num_queries):
    members = [django_user_model.objects.create_user(f"member{n}") for n in range(5)]
    room = Room.objects.create(slug="club", name="Club", private=True)
    room.members.add(*members)
    client.force_login(members[0])
    post_message(room, members[0], "hello")
    with django_assert_num_queries(5) as few:  # session, user, room, membership, messages
        client.get("/rooms/club/")
    for n in range(30):
        post_message(room, members[n % 5], f"message {n}")
    with django_assert_num_queries(len(few.captured_queries)):
        client.get("/rooms/club/")


@pytest.mark.django_db
def test_the_room_list_shows_who_is_online_in_each_room(client):
    from chat.models import Presence

    user = get_user_model().objects.create_user("lister", password=None)
    Presence.objects.create(room="lobby", username="zoe", worker="h:1")
    Presence.objects.create(room="lobby", username="amy", worker="h:2")
    client.force_login(user)
    page = client.get("/rooms/").content.decode()
    assert "online: amy, zoe" in page
