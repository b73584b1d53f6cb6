"""Bare gevent-websocket peer: the benchmark dialect with no Django and no database.

``python bare_chat.py --port 9001`` serves ``/ws/`` from one process. Rooms, seqs and ids
live in memory. Each socket has a writer greenlet draining an unbounded queue: a broadcast
puts the same text on every member's queue without switching, so every member gets a room's
messages in seq order and a slow reader delays nobody else. gevent-websocket is used as
shipped (version 0.10.1, no mends).
"""
import argparse
import itertools
import json
import logging
from datetime import datetime, timezone
from urllib.parse import parse_qs

import gevent
from gevent.queue import Queue
from geventwebsocket import WebSocketError, WebSocketServer

logger = logging.getLogger("bare_chat")
rooms = {}  # room -> set of Client
last_seq = {}  # room -> latest seq
message_ids = itertools.count(1)


class Client:
    """One socket: its user, its rooms and its outgoing queue."""

    def __init__(self, ws, user):
        self.ws, self.user, self.rooms, self.queue = ws, user, set(), Queue()

    def put(self, event):
        self.queue.put(json.dumps(event))

    def write_all(self):
        try:
            for text in self.queue:
                self.ws.send(text)
        except WebSocketError:
            pass


def on_join(client, frame):
    room = frame["room"]
    rooms.setdefault(room, set()).add(client)
    client.rooms.add(room)
    client.put({"type": "joined", "room": room, "seq": last_seq.get(room, 0)})


def on_send(client, frame):
    room = frame["room"]
    seq = last_seq[room] = last_seq.get(room, 0) + 1
    text = json.dumps({
        "type": "message", "room": room, "seq": seq, "id": next(message_ids),
        "user": client.user, "body": frame["body"],
        "ts": datetime.now(timezone.utc).isoformat(), "ref": frame.get("ref"),
    })
    for member in rooms.get(room, ()):
        member.queue.put(text)


def on_ping(client, frame):
    client.put({"type": "pong", "ref": frame.get("ref")})


HANDLERS = {"join": on_join, "send": on_send, "ping": on_ping}


def handle(client, text):
    try:
        frame = json.loads(text)
        handler = HANDLERS.get(frame["type"])
        if handler is None:
            client.put({"type": "error", "code": "unknown_type"})
        else:
            handler(client, frame)
    except (ValueError, KeyError, TypeError):
        client.put({"type": "error", "code": "bad_request"})


def application(environ, start_response):
    """The WSGI app: run a socket on ``/ws/``, 404 for anything else."""
    ws = environ.get("wsgi.websocket")
    if ws is None or environ.get("PATH_INFO") != "/ws/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    user = parse_qs(environ.get("QUERY_STRING", "")).get("user", ["anon"])[0]
    client = Client(ws, user)
    writer = gevent.spawn(client.write_all)
    try:
        while (text := ws.receive()) is not None:
            handle(client, text)
    except WebSocketError:
        pass
    finally:
        for room in client.rooms:
            rooms[room].discard(client)
        writer.kill()
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = WebSocketServer((args.host, args.port), application, log=None)
    logger.info("serving ws://%s:%s/ws/", args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
