"""The room page's form without JavaScript: POST, 303, GET, against a real gunicorn (2 workers)."""
import html
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.cookies import SimpleCookie

import pytest

from tests.live import join, receive_type, sockets_on_every_worker

TIMEOUT = 10
BLANK = "body must be text of 1 to 4000 characters, not only white space"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the test reads the 303 itself


@dataclass
class Page:
    status: int
    headers: object
    text: str

    def form_ref(self):
        return re.search(r'<input type="hidden" name="ref" value="([^"]+)">', self.text).group(1)

    def csrf(self):
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.text).group(1)


class FormClient:
    """An HTTP client that keeps its cookies, signed in by a session key, following no redirect."""

    def __init__(self, server, session_key=None):
        self.server = server
        self.cookies = {"sessionid": session_key} if session_key else {}
        self.opener = urllib.request.build_opener(NoRedirect)

    def request(self, path, data=None):
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        request = urllib.request.Request(self.server.url + path, data=data, headers={"Cookie": cookie})
        try:
            response = self.opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            for header in response.headers.get_all("Set-Cookie") or []:
                self.cookies.update((name, m.value) for name, m in SimpleCookie(header).items())
            return Page(response.getcode(), response.headers, response.read().decode())

    def post(self, room, body, ref=None, token_page=None):
        """Post the room's form as a browser would: its CSRF token and (unless given) its ref."""
        page = token_page or self.request(f"/rooms/{room}/")
        fields = {"csrfmiddlewaretoken": page.csrf(), "ref": page.form_ref() if ref is None else ref,
                  "body": body}
        return self.request(f"/rooms/{room}/messages/", urllib.parse.urlencode(fields).encode())


def stored(django_db_blocker, room):
    """The bodies stored in ``room``, by seq."""
    from chat.models import Message

    with django_db_blocker.unblock():
        return list(Message.objects.filter(room__slug=room).order_by("seq").values_list("body", flat=True))


@pytest.fixture(scope="module")
def server(start_server):
    """Two workers whose cursor checks never run in a test: only a publish delivers live."""
    return start_server(WEB_CONCURRENCY=2, CHAT_CURSOR_CHECK_INTERVAL=600)


@pytest.fixture
def member(server, make_users, make_room):
    """A signed-in client and a fresh public room."""
    [(name, key)] = make_users(1, prefix="poster")
    return FormClient(server, key), make_room(), name


def test_a_posted_message_is_stored_and_the_303_leads_to_the_page_that_shows_it(member):
    client, room, name = member
    response = client.post(room, "hello without script")
    assert response.status == 303
    assert response.headers["Location"] == f"/rooms/{room}/#m1"
    page = client.request(f"/rooms/{room}/")
    assert page.status == 200
    assert 'id="m1" data-seq="1"' in page.text
    assert '<span class="body">hello without script</span>' in page.text


def test_a_posted_mention_is_stored_for_the_mentioned_user(member, make_users, django_db_blocker):
    client, room, _ = member
    [(mentioned, _)] = make_users(1, prefix="named")
    assert client.post(room, f"look, @{mentioned}").status == 303
    from chat.models import Mention

    with django_db_blocker.unblock():
        assert list(Mention.objects.filter(message__room__slug=room)
                    .values_list("user__username", "seen")) == [(mentioned, False)]


def test_each_render_of_the_page_carries_a_fresh_ref(member):
    client, room, _ = member
    first, second = client.request(f"/rooms/{room}/"), client.request(f"/rooms/{room}/")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        first.form_ref())
    assert first.form_ref() != second.form_ref()


def test_a_double_submit_with_the_same_ref_stores_one_message(member, django_db_blocker):
    client, room, _ = member
    page = client.request(f"/rooms/{room}/")
    answers = [client.post(room, "only once", token_page=page) for _ in range(2)]
    assert [a.status for a in answers] == [303, 303]
    assert answers[0].headers["Location"] == answers[1].headers["Location"] == f"/rooms/{room}/#m1"
    assert stored(django_db_blocker, room) == ["only once"]


def test_another_body_under_a_ref_already_used_is_a_new_message_stored_once(member, django_db_blocker):
    client, room, _ = member
    page = client.request(f"/rooms/{room}/")  # the page the Back button shows again
    client.post(room, "first", token_page=page)
    again = [client.post(room, "second, from the same page", token_page=page) for _ in range(2)]
    assert [a.headers["Location"] for a in again] == [f"/rooms/{room}/#m2"] * 2
    assert stored(django_db_blocker, room) == ["first", "second, from the same page"]


def test_new_lines_are_stored_as_the_javascript_client_sends_them(member, django_db_blocker):
    client, room, _ = member
    assert client.post(room, "two\r\nlines").status == 303
    assert stored(django_db_blocker, room) == ["two\nlines"]


def test_sockets_in_the_room_on_every_worker_receive_the_posted_message_live(
        server, member, make_users):
    client, room, name = member
    sockets = sockets_on_every_worker(server, make_users, room=room)
    assert client.post(room, "to the live ones").status == 303
    for ws in sockets.values():
        event = receive_type(ws, "message")
        assert {k: event[k] for k in ("room", "seq", "user", "body")} == {
            "room": room, "seq": 1, "user": name, "body": "to the live ones"}
        ws.close()


def test_a_socket_joined_after_the_post_gets_it_in_its_snapshot(server, member, make_users):
    from tests.live import connect

    client, room, _ = member
    client.post(room, "before the join")
    [(_, key)] = make_users(1, prefix="latejoiner")
    ws = connect(server, key)
    assert [m["body"] for m in join(ws, room)["messages"]] == ["before the join"]
    ws.close()


@pytest.mark.parametrize("body", ["   \n  ", "x" * 4001])
def test_a_bad_body_is_refused_with_400_and_the_page_keeps_the_text(member, body, django_db_blocker):
    client, room, _ = member
    page = client.request(f"/rooms/{room}/")
    response = client.post(room, body, token_page=page)
    assert response.status == 400
    assert f'<ul class="errorlist" role="alert"><li>{BLANK}</li></ul>' in response.text
    assert f">\n{html.escape(body)}</textarea>" in response.text
    assert response.form_ref() == page.form_ref()  # a resend may reuse it: nothing was stored
    assert stored(django_db_blocker, room) == []


def test_a_post_without_ref_is_refused_with_400(member, django_db_blocker):
    client, room, _ = member
    response = client.post(room, "no ref", ref="")
    assert response.status == 400
    assert "The form has no ref: reload the page and send the message again." in response.text
    assert stored(django_db_blocker, room) == []


def test_an_outsider_of_a_private_room_gets_403_and_nothing_is_stored(
        server, make_users, make_room, django_db_blocker):
    (member_name, _), (_, outsider_key) = make_users(2, prefix="private")
    room = make_room(private=True, members=[member_name])
    outsider = FormClient(server, outsider_key)
    response = outsider.post(room, "let me in", ref="a-ref", token_page=outsider.request("/rooms/"))
    assert response.status == 403
    assert "This room is private." in response.text
    assert stored(django_db_blocker, room) == []


def test_an_anonymous_post_is_sent_to_the_login_page(server, make_room, django_db_blocker):
    room = make_room()
    anonymous = FormClient(server)
    response = anonymous.post(room, "who am I", ref="a-ref",
                              token_page=anonymous.request("/accounts/login/"))
    assert response.status == 302
    assert response.headers["Location"] == f"/accounts/login/?next=/rooms/{room}/messages/"
    assert stored(django_db_blocker, room) == []


def test_the_show_new_messages_link_reloads_the_page_at_its_end(member):
    client, room, _ = member
    page = client.request(f"/rooms/{room}/")
    assert f'<a href="/rooms/{room}/messages/">Show new messages</a>' in page.text
    response = client.request(f"/rooms/{room}/messages/")
    assert response.status == 303 and response.headers["Location"] == f"/rooms/{room}/#end"


def test_posting_over_the_rate_limit_gets_429_with_why(start_server, make_users, make_room,
                                                       django_db_blocker):
    own = start_server(WEB_CONCURRENCY=2, CHAT_RATE_LIMIT=0.001, CHAT_RATE_BURST=1)
    [(_, key)] = make_users(1, prefix="hasty")
    room = make_room()
    client = FormClient(own, key)
    # One token per worker: three posts exceed it on one worker at least.
    answers = [client.post(room, f"hasty {n}") for n in range(3)]
    refused = [a for a in answers if a.status == 429]
    assert refused and {a.status for a in answers} <= {303, 429}
    assert refused[0].headers["Retry-After"] == "1"
    assert ("Slow down: at most 0.001 messages a second. "
            "Your message was not sent; press Send again in a moment.") in refused[0].text
    assert f">\nhasty {answers.index(refused[0])}</textarea>" in refused[0].text
    assert len(stored(django_db_blocker, room)) == len(answers) - len(refused)


def test_a_worker_without_a_hub_publishes_through_the_broker(server, make_users, make_room,
                                                             pooled_db):
    """No socket opened in this process: the message goes out on a publish-only broker."""
    from django.contrib.auth import get_user_model

    from chat import roompost, runtime
    from chat.models import Room
    from tests.live import connect

    assert runtime.current_hub() is None
    (poster, _), (_, reader_key) = make_users(2, prefix="hubless")
    room = make_room()
    ws = connect(server, reader_key)
    join(ws, room)
    user = get_user_model().objects.get(username=poster)
    message = roompost.post(user, Room.objects.get(slug=room), "through the broker", "ref-1")
    event = receive_type(ws, "message")
    assert (event["seq"], event["user"], event["body"]) == (message.seq, poster, "through the broker")
    ws.close()
