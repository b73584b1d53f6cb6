"""Flask-SocketIO peer: the benchmark dialect as Socket.IO events, gevent mode, in-process.

Serve with ``gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1
flask_chat:app``. Events ``join``, ``send`` and ``ping`` carry the dialect's objects and
are answered with ``joined``, ``message`` (to the room) and ``pong``. The seq is a counter
per room, the id a counter per process. ``ENGINEIO_PING_INTERVAL`` / ``_TIMEOUT`` (seconds)
override python-engineio's heartbeat defaults (25 / 20).
"""
import itertools
import os
from datetime import datetime, timezone

from flask import Flask, request
from flask_socketio import SocketIO, emit, join_room


def _heartbeat_options():
    names = {"ping_interval": "ENGINEIO_PING_INTERVAL", "ping_timeout": "ENGINEIO_PING_TIMEOUT"}
    return {option: float(os.environ[name]) for option, name in names.items()
            if os.environ.get(name)}


app = Flask(__name__)
socketio = SocketIO(app, async_mode="gevent", **_heartbeat_options())
users = {}  # Socket.IO sid -> username
last_seq = {}  # room -> latest seq
message_ids = itertools.count(1)


@socketio.on("connect")
def on_connect(auth=None):
    users[request.sid] = request.args.get("user", "anon")


@socketio.on("disconnect")
def on_disconnect(reason=None):
    users.pop(request.sid, None)


@socketio.on("join")
def on_join(frame):
    room = frame["room"]
    join_room(room)
    emit("joined", {"type": "joined", "room": room, "seq": last_seq.get(room, 0)})


@socketio.on("send")
def on_send(frame):
    room = frame["room"]
    seq = last_seq[room] = last_seq.get(room, 0) + 1  # no switch between read and write
    emit("message", {
        "type": "message", "room": room, "seq": seq, "id": next(message_ids),
        "user": users.get(request.sid, "anon"), "body": frame["body"],
        "ts": datetime.now(timezone.utc).isoformat(), "ref": frame.get("ref"),
    }, to=room)


@socketio.on("ping")
def on_ping(frame=None):
    emit("pong", {"type": "pong", "ref": (frame or {}).get("ref")})
