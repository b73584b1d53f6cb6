"""A stand-in server that pushes chat `message` frames as fast as asked: loadtest.py's ceiling.

It speaks just enough of the protocol (upgrade, `join` -> `joined`) and then sends every
socket the same frames, built once per round, so its own cost per delivery is tiny and the
load client's receiving rate is what gets measured:

    python bench/blaster.py --port 8200 --rate 8      # messages/s to every socket
    python loadtest.py --url http://127.0.0.1:8200 --no-login --users 5000 --senders 0 \
        --rate 0 --duration 10 --ramp 5
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
sockets = set()
newest = [0]  # the last seq sent


def server_frame(payload):
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + payload
    return struct.pack("!BBH", 0x81, 126, length) + payload


def handle(sock, address):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return
        data += chunk
    key = next(line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    sock.recv(4096)  # the join frame; its content does not matter here
    sock.sendall(server_frame(json.dumps({"type": "joined", "room": "load-1", "seq": newest[0]}).encode()))
    sockets.add(sock)
    try:
        while sock.recv(4096):
            pass
    finally:
        sockets.discard(sock)


def blast(rate, batch, size):
    seq, interval = 0, batch / rate
    while True:
        began = time.time()
        frames = []
        for _ in range(batch):
            seq += 1
            body = f"lt {time.time():.6f} ".ljust(size, "x")
            frames.append(server_frame(json.dumps({
                "type": "message", "room": "load-1", "seq": seq, "id": seq, "user": "blaster",
                "body": body, "ts": "2026-01-01T00:00:00Z", "ref": None}).encode()))
        chunk = b"".join(frames)
        newest[0] = seq
        for sock in list(sockets):
            try:
                sock.sendall(chunk)
            except OSError:
                sockets.discard(sock)
        gevent.sleep(max(0, interval - (time.time() - began)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--rate", type=float, default=8, help="messages per second to every socket")
    parser.add_argument("--batch", type=int, default=1, help="messages per round")
    parser.add_argument("--size", type=int, default=64, help="body size")
    args = parser.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gevent.spawn(blast, args.rate, args.batch, args.size)
    StreamServer(("127.0.0.1", args.port), handle, backlog=4096).serve_forever()


if __name__ == "__main__":
    main()
