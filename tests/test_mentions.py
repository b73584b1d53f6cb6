"""Mentions: stored once per message and user, live on the user's channel on every worker,
counted while offline, and never for someone who can't read the room.

Live tests run against the shared two-worker gunicorn.
"""
import re
import time

from django.contrib.auth import get_user_model
from django.test import Client

from chat import mentions
from chat.models import Mention, Message, ReadMarker, Room
from tests.live import connect, join, on_worker, receive, receive_type, send, worker_of


def nothing_more(ws):
    """Assert that nothing but the pong of a ping comes next."""
    send(ws, type="ping", ref="last")
    assert receive(ws) == {"type": "pong", "ref": "last"}


def stored(room, seq, timeout=10):
    """Wait until the mentions of message ``seq`` are stored (after its broadcast); return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(Mention.objects.filter(message__room__slug=room, message__seq=seq)
                    .values_list("user__username", "seen"))
        if rows:
            return sorted(rows)
        time.sleep(0.05)
    return []


def said(ws, room, body, ref):
    send(ws, type="send", room=room, body=body, ref=ref)
    return receive_type(ws, "message")


def test_usernames_are_found_as_mentions_but_addresses_and_punctuation_are_not(settings):
    body = "thanks @ann. and (@bob), not ann@example.com or @@carol; @dan-@dan again"
    assert mentions.names(body) == ["ann", "bob", "dan"]
    settings.CHAT_MENTIONS_MAX = 2
    assert mentions.names("@a @b @c") == ["a", "b"]


def test_a_mention_is_stored_once_and_reaches_the_users_sessions_on_both_workers(
        server, make_users, make_room, committed_db):
    (author, author_key), (named, named_key) = make_users(2, prefix="mention")
    room = make_room()
    writer = connect(server, author_key)
    pid = worker_of(writer)
    [other] = set(server.worker_pids()) - {pid}
    near, far = connect(server, named_key), on_worker(server, named_key, other)
    worker_of(near)  # both answer: they are open before the message is sent
    join(writer, room)
    body = f"@{named} look, @{named} again"
    message = said(writer, room, body, "m1")
    expected = {"type": "mention", "room": room, "seq": message["seq"], "id": message["id"],
                "by": author, "body": body, "ts": message["ts"]}
    for ws in (near, far):  # joined to no room: the user's own channel
        assert receive_type(ws, "mention") == expected
    assert stored(room, message["seq"]) == [(named, False)]
    assert said(writer, room, "a resend", "m1")["seq"] == message["seq"]  # stores nothing
    for ws in (near, far):
        nothing_more(ws)
    assert Mention.objects.filter(message_id=message["id"]).count() == 1
    for ws in (writer, near, far):
        ws.close()


def test_a_mention_made_while_offline_is_shown_on_the_next_visit_and_seen_once_read(
        server, make_users, make_room, committed_db):
    (author, author_key), (named, named_key) = make_users(2, prefix="offline")
    room = make_room(messages=2, author=author)
    writer = connect(server, author_key)
    join(writer, room)
    message = said(writer, room, f"are you there, @{named}?", "o1")
    assert stored(room, message["seq"]) == [(named, False)]
    page = Client()
    page.force_login(get_user_model().objects.get(username=named))
    header = page.get("/").content.decode()
    assert re.search(rf'<a class="mentions" href="/rooms/{room}/#m3" title="unseen mentions of you">'
                     r'@ <span class="mentions-count">1</span></a>', header)
    ws = connect(server, named_key)
    join(ws, room)
    send(ws, type="read", room=room, seq=message["seq"])
    assert receive_type(ws, "unread") == {"type": "unread", "room": room, "read": 3, "count": 0,
                                          "mentions": 0}
    assert stored(room, message["seq"]) == [(named, True)]
    assert '<a class="mentions" hidden' in page.get("/").content.decode()
    for socket in (writer, ws):
        socket.close()


def test_only_active_readers_of_a_private_room_are_mentioned_and_never_the_author(
        server, make_users, make_room, committed_db):
    (author, author_key), (member, member_key), (outsider, outsider_key), (gone, _) = \
        make_users(4, prefix="private")
    get_user_model().objects.filter(username=gone).update(is_active=False)
    room = make_room(private=True, members=[author, member, gone])
    member_ws, outsider_ws = connect(server, member_key), connect(server, outsider_key)
    writer = connect(server, author_key)
    join(writer, room)
    body = f"@{outsider} @{gone} @{author} @nobody-at-all and @{member}"
    message = said(writer, room, body, "p1")
    assert receive_type(member_ws, "mention")["body"] == body
    assert stored(room, message["seq"]) == [(member, False)]
    nothing_more(outsider_ws)  # no mention event, and no row: privacy
    assert not Mention.objects.filter(user__username__in=[outsider, gone, author]).exists()
    for ws in (writer, member_ws, outsider_ws):
        ws.close()


def test_a_mention_of_a_user_who_already_read_past_it_is_stored_seen_and_not_notified(
        make_users, make_room, pooled_db):
    (author, _), (named, _) = make_users(2, prefix="already")
    room = Room.objects.get(slug=make_room(messages=3, author=author))
    users = {name: get_user_model().objects.get(username=name) for name in (author, named)}
    ReadMarker.objects.create(user=users[named], room=room, last_read=3)
    message = Message.objects.get(room=room, seq=3)
    message.body = f"hi @{named}"
    heard = []
    assert mentions.notify(message, room.slug, users[author],
                           deliver=lambda user_id, event: heard.append(user_id)) == []
    assert heard == [] and Mention.objects.get(message=message).seen is True
