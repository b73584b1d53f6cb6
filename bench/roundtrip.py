"""S3: one client, sequential sends, each awaiting its own broadcast (a closed loop)."""
import os
import time

from bench import peers
from chatload import login, report, wire


def round_trips(server, count):
    """Return the round-trip percentiles (ms) of ``count`` sends to ``server``, after a warm-up."""
    dialect = wire.DIALECTS["chat" if server.name == "ours" else peers.DIALECT[server.name]]
    if server.name == "ours":
        path, cookie = "/ws/", login.login(server.url, "load1", "chat-load-test")
    else:
        path, cookie = peers.WS_PATH[server.name] + ("&" if "?" in peers.WS_PATH[server.name] else "?") + "user=s3", None
    sock, rest = wire.open_socket("127.0.0.1", server.port, path, cookie)
    conn = Connection(sock, rest, dialect)
    dialect.greet(conn)
    conn.send({"type": "join", "room": "load-1"})
    conn.wait(lambda event: event.get("type") == "joined")
    times = []
    for n in range(count + 50):  # the first 50 warm the server up and are not counted
        ref = f"s3-{os.getpid()}-{n}"
        began = time.perf_counter()
        conn.send({"type": "send", "room": "load-1", "body": f"round trip {n}", "ref": ref})
        conn.wait(lambda event: event.get("type") == "message" and event.get("ref") == ref)
        if n >= 50:
            times.append(time.perf_counter() - began)
    sock.close()
    return {"count": count, **report.percentiles(times, (50, 90, 99))}


class Connection:
    def __init__(self, sock, rest, dialect):
        self.sock, self.buffer, self.dialect, self.frames = sock, bytearray(rest), dialect, []

    def send_raw(self, payload, opcode=wire.OP_TEXT):
        self.sock.sendall(wire.frame(opcode, payload))

    def send(self, obj):
        self.send_raw(self.dialect.encode(obj))

    def wait(self, wanted, timeout=10):
        """Read events until one satisfies ``wanted``; raise after ``timeout`` seconds."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.frames += wire.parse(self.buffer)
            while self.frames:
                first, payload = self.frames.pop(0)
                if first & 0x0F == wire.OP_PING:
                    self.send_raw(payload, wire.OP_PONG)
                elif first & 0x0F == wire.OP_TEXT:
                    event, reply = self.dialect.decode(payload)
                    if reply is not None:
                        self.send_raw(reply)
                    if event is not None and wanted(event):
                        return event
            self.sock.settimeout(max(0.01, deadline - time.time()))
            data = self.sock.recv(65536)
            if not data:
                raise wire.Closed(1006)
            self.buffer += data
        raise TimeoutError("no answer in time")
