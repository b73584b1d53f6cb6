"""Plain Django code pushes events to open sockets: the admin's delete and ``announce``."""

from django.contrib.auth import get_user_model
from django.test import Client

from chat import publish
from chat.models import Message
from tests.live import connect, join, manage, receive, receive_type, send


def test_announce_reaches_a_room_from_another_process(server, make_users, make_room, database_url):
    (_, in_key), (_, out_key) = make_users(2, prefix="announce")
    room = make_room()
    inside, outside = connect(server, in_key), connect(server, out_key)
    join(inside, room)
    result = manage(database_url, "announce", "Maintenance at noon", "--room", room)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Announced to {room}."
    assert receive_type(inside, "notice") == {"type": "notice", "body": "Maintenance at noon", "room": room}
    send(outside, type="ping", ref="p")
    assert receive_type(outside, "pong") == {"type": "pong", "ref": "p"}  # no notice came first
    inside.close()
    outside.close()


def test_announce_without_a_room_reaches_every_socket(server, make_users, database_url):
    clients = [connect(server, key) for _, key in make_users(3, prefix="everyone")]
    for ws in clients:  # signed in before the notice goes out
        send(ws, type="whoami")
        receive_type(ws, "whoami")
    result = manage(database_url, "announce", "Hello, everyone")
    assert result.returncode == 0, result.stderr
    for ws in clients:
        assert receive_type(ws, "notice") == {"type": "notice", "body": "Hello, everyone"}
        ws.close()


def test_announce_refuses_an_empty_text_and_an_unknown_room(database_url):
    empty = manage(database_url, "announce", "  ")
    assert empty.returncode != 0 and "The notice is empty: give some text." in empty.stderr
    unknown = manage(database_url, "announce", "hi", "--room", "nowhere")
    assert unknown.returncode != 0 and "There is no room 'nowhere'." in unknown.stderr


def test_deleting_a_message_in_the_admin_removes_it_from_open_sockets(
        server, make_users, make_room, pooled_db):
    [(author, key)] = make_users(1, prefix="deleter")
    room = make_room(messages=3, author=author)
    ws = connect(server, key)
    join(ws, room)
    admin = get_user_model().objects.create_superuser(f"admin-{room}", password=None)
    client = Client()
    client.force_login(admin)
    doomed = Message.objects.get(room__slug=room, seq=2)
    response = client.post("/admin/chat/message/", {
        "action": "delete_selected", "_selected_action": [doomed.pk], "post": "yes"})
    assert response.status_code == 302
    # A change seq, as a delete frame takes: a client away meanwhile learns of it on join.
    assert receive_type(ws, "message_deleted") == {
        "type": "message_deleted", "room": room, "id": doomed.pk, "seq": 2, "change": 1}
    doomed.refresh_from_db()
    assert (doomed.deleted, doomed.change) == (True, 1)
    assert [(e.action, e.by_id, e.body) for e in doomed.edits.all()] == [("delete", admin.pk, "message 2")]
    send(ws, type="history", room=room)
    assert [m["seq"] for m in receive_type(ws, "history")["messages"]] == [1, 3]
    ws.close()


def test_publish_of_an_event_over_the_maximum_raises_before_anything_is_sent(settings):
    import pytest

    from chat.errors import EventTooLarge

    settings.CHAT_BROKER = "postgres"
    with pytest.raises(EventTooLarge, match=r"^the event is \d+ bytes, over the maximum of 1048576 "
                                            r"bytes \(CHAT_EVENT_MAX_BYTES\)$"):
        publish.publish("anywhere", {"type": "notice", "body": "y" * 1048576})


def test_a_notice_can_be_read_from_standard_input(server, make_users, database_url):
    [(_, key)] = make_users(1, prefix="stdin")
    ws = connect(server, key)
    send(ws, type="whoami")
    receive_type(ws, "whoami")
    result = manage(database_url, "announce", "-", stdin="From a file\nof two lines")
    assert result.returncode == 0, result.stderr
    assert receive_type(ws, "notice") == {"type": "notice", "body": "From a file\nof two lines"}
    ws.close()


def test_an_event_to_a_user_reaches_each_of_their_sessions_on_every_worker_whatever_the_rooms(
        server, make_users, pooled_db):
    from tests.live import Poller, on_worker

    (username, key), (_, other_key) = make_users(2, prefix="own")
    mine = [on_worker(server, key, pid) for pid in server.worker_pids()]  # joined to no room
    theirs = connect(server, other_key)
    poller = Poller(server, key)
    poller.exchange()  # a stream, joined to no room either
    user = get_user_model().objects.get(username=username)
    publish.to_user(user, {"type": "mention", "room": "lobby", "seq": 7})
    for ws in mine:
        assert receive_type(ws, "mention") == {"type": "mention", "room": "lobby", "seq": 7}
    assert poller.events("mention") == [{"type": "mention", "room": "lobby", "seq": 7}]
    send(theirs, type="ping")
    assert receive(theirs)["type"] == "pong"  # nothing came before it: not this user's
    for ws in mine + [theirs]:
        ws.close()
