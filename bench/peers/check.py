"""Check that each peer speaks the benchmark dialect: ``python bench/peers/check.py [name...]``.

Runs with the project's .venv python (needs ``websocket-client``, and ``pgserver`` and
``psycopg2`` for the channels peer). For each peer: start it, connect 3 raw clients, join
``lobby``, send 20 messages from the 3 clients in turn without waiting, check that every
client got all 20 in seq order with user, body and ref intact, ping each, and for
Socket.IO answer Engine.IO heartbeats for a while; then stop it. The channels peer uses
``PEER_DATABASE_URL`` if set, otherwise an embedded PostgreSQL in ``var/peers-pgdata``.
Each peer's log: ``var/peers/check-<name>.log``.
"""
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import peers  # noqa: E402

CLIENTS = 3
MESSAGES = 20
ROOM = "lobby"
DATABASE = "peer_channels"
HEARTBEAT = {"ENGINEIO_PING_INTERVAL": "1", "ENGINEIO_PING_TIMEOUT": "1"}


class ChatClient:
    """The "chat" dialect: one JSON object per WebSocket text frame."""

    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=10)

    def send(self, event):
        self.ws.send(json.dumps(event))

    def recv(self):
        return json.loads(self.ws.recv())

    def close(self):
        self.ws.close()


class SocketIOClient(ChatClient):
    """The "socketio" dialect: the same objects as Socket.IO events over Engine.IO v4."""

    def __init__(self, url):
        super().__init__(url)
        self.heartbeats = 0
        opening = self.ws.recv()
        assert opening.startswith("0{") and "pingInterval" in opening, opening
        self.ws.send("40")
        connected = self.ws.recv()
        assert connected.startswith("40{") and '"sid"' in connected, connected

    def send(self, event):
        self.ws.send("42" + json.dumps([event["type"], event]))

    def recv(self):
        while True:
            packet = self.ws.recv()
            if packet == "2":  # Engine.IO ping: answer pong
                self.heartbeats += 1
                self.ws.send("3")
                continue
            assert packet.startswith("42["), packet
            name, event = json.loads(packet[2:])
            assert name == event["type"], packet
            return event


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url():
    """Return PEER_DATABASE_URL, or start the embedded PostgreSQL and create the database."""
    if os.environ.get("PEER_DATABASE_URL"):
        return os.environ["PEER_DATABASE_URL"], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    from project.embedded import create_database

    server = pgserver.get_server(peers.ROOT / "var" / "peers-pgdata")
    create_database(server, DATABASE)
    return server.get_uri(DATABASE), server


def connect_all(name, port):
    kind = SocketIOClient if peers.DIALECT[name] == "socketio" else ChatClient
    base = f"ws://127.0.0.1:{port}{peers.WS_PATH[name]}"
    joiner = "&" if "?" in base else "?"
    return [kind(f"{base}{joiner}user=u{i}") for i in range(CLIENTS)]


def join_all(clients):
    """Join every client to ROOM; return the room's seq before our messages."""
    seqs = []
    for client in clients:
        client.send({"type": "join", "room": ROOM})
        joined = client.recv()
        assert joined["type"] == "joined" and joined["room"] == ROOM, joined
        seqs.append(joined["seq"])
    assert len(set(seqs)) == 1, f"joined seqs differ: {seqs}"
    return seqs[0]


def sent_messages():
    """The (sender index, ref, body) of each message, in the order they are sent."""
    return [(i % CLIENTS, f"r{i}", f"message {i} \u00e9\u2603 \"quoted\"") for i in range(MESSAGES)]


def check_messages(clients, base_seq):
    """Send all messages, then check what each client received."""
    plan = sent_messages()
    for sender, ref, body in plan:
        clients[sender].send({"type": "send", "room": ROOM, "body": body, "ref": ref})
    expected = {ref: (f"u{sender}", body) for sender, ref, body in plan}
    for index, client in enumerate(clients):
        got = [client.recv() for _ in range(MESSAGES)]
        seqs = [event["seq"] for event in got]
        assert seqs == list(range(base_seq + 1, base_seq + MESSAGES + 1)), f"client {index}: {seqs}"
        for event in got:
            assert event["type"] == "message" and event["room"] == ROOM, event
            assert (event["user"], event["body"]) == expected[event["ref"]], event
            assert isinstance(event["id"], int) and event["ts"].endswith(("Z", "+00:00")), event
        refs = [event["ref"] for event in got]
        assert sorted(refs) == sorted(expected), f"client {index}: refs {refs}"
        for sender in range(CLIENTS):  # each sender's messages keep their sending order
            own = [ref for ref in refs if expected[ref][0] == f"u{sender}"]
            assert own == [ref for s, ref, _ in plan if s == sender], f"client {index}: {own}"


def check_ping(clients):
    for index, client in enumerate(clients):
        client.send({"type": "ping", "ref": f"p{index}"})
        pong = client.recv()
        assert pong == {"type": "pong", "ref": f"p{index}"}, pong


def check_heartbeat(clients, seconds=3.5):
    """Socket.IO: answer Engine.IO pings for longer than interval + timeout, then still ping."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check_ping(clients)
        time.sleep(0.25)
    beats = [client.heartbeats for client in clients]
    assert all(beats), f"no Engine.IO heartbeat seen: {beats}"
    return f", heartbeats answered {beats}"


def check_peer(name, database_url=None):
    port = free_port()
    env = HEARTBEAT if name == "flask" else None
    log_path = peers.VENVS / f"check-{name}.log"
    log_path.unlink(missing_ok=True)
    started = time.monotonic()
    proc = peers.start(name, port, database_url=database_url, log_path=log_path, env=env)
    try:
        up = time.monotonic() - started
        clients = connect_all(name, port)
        base = join_all(clients)
        check_messages(clients, base)
        check_ping(clients)
        extra = check_heartbeat(clients) if name == "flask" else ""
        for client in clients:
            client.close()
    finally:
        peers.stop(proc)
    return (f"{name}: ok on port {port} (up in {up:.1f} s): {CLIENTS} clients got all "
            f"{MESSAGES} messages, seq {base + 1}..{base + MESSAGES} in order, ping ok{extra}")


def main(names):
    names = names or list(peers.NAMES)
    server = None
    failed = False
    try:
        for name in names:
            url = None
            if name == "channels":
                url, server = database_url()
            try:
                print(check_peer(name, url), flush=True)
            except Exception as error:  # report and go on with the next peer
                failed = True
                print(f"{name}: FAILED: {type(error).__name__}: {error}", flush=True)
    finally:
        if server is not None:
            server.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
