"""What one idle, authenticated, joined socket costs our server, item by item.

    .venv/bin/python bench/socket_cost.py [--sockets 1000] [--port 8311] [--label main]

About 4 minutes for 1,000 sockets, 12 for 3,000 (pass 2 runs under tracemalloc, 40 frames deep).

One fresh gunicorn worker with production settings (bench/harness.py; the test hooks on, for
``_memory``), on CPU 0 with its PostgreSQL; this client on CPU 1. Two passes of ``--sockets``
sockets each (50 accounts, signed in through the login form, each socket joining ``load-1``):

1. RSS: the worker's resident memory after the pass minus before it, per socket, with the
   greenlets and the garbage-collected objects it added (by type), per socket.
2. tracemalloc: tracing starts after pass 1, so pass 2's allocations still alive at its end
   are what a socket costs a warm worker, grouped by the code that allocated them.

What tracemalloc cannot see (greenlets' Python data stacks and C stacks, allocator slack) is
the RSS per socket minus the traced bytes; the parked-greenlet figure, measured in a process
of its own, says how much of that the greenlets explain. Prints a table; writes
bench/results/socket_cost[-<label>].json.
"""
import argparse
import datetime
import json
import linecache
import os
import pickle
import subprocess
import sys
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from chatload import login, wire  # noqa: E402
from chatload import server as proc_stats  # noqa: E402

ACCOUNTS, PASSWORD, ROOM = 50, "chat-load-test", "load-1"
#: Ours, so that the sockets never answer a ping: nothing is dropped while the passes run.
QUIET = {"CHAT_TEST_HOOKS": "1", "CHAT_PING_INTERVAL": "3000", "CHAT_IDLE_TIMEOUT": "6000"}
TRACE_FRAMES = 40
SETTLE = 2.0  # seconds after a pass: the greenlets it spawned (presence, tallies) finish

#: Where an allocation belongs: the innermost frame in one of these paths (first match wins).
GROUPS = (
    ("django/contrib/sessions/", "Django session"),
    ("django/contrib/auth/", "Django user and auth"),
    ("django/core/handlers/", "Django request"),
    ("django/http/", "Django request"),
    ("django/middleware/", "Django middleware"),
    ("chat/middleware.py", "Django middleware"),
    ("chat/revocation.py", "Django middleware"),
    ("django/db/", "Django ORM"),
    ("geventwebsocket/", "WebSocket object"),
    ("chat/wsmends.py", "WebSocket object"),
    ("gevent/pywsgi.py", "pywsgi handler and its rfile"),
    ("chat/worker.py", "pywsgi handler and its rfile"),
    ("chat/wsendpoint.py", "socket view (chat/wsendpoint.py)"),
    ("chat/sockets.py", "SocketSession"),
    ("chat/outbox.py", "Outbox"),
    ("chat/ratelimit.py", "token buckets"),
    ("chat/hub.py", "hub: rooms and sessions"),
    ("chat/cursor.py", "hub: rooms and sessions"),
    ("chat/presence.py", "presence tracker"),
    ("chat/authority.py", "authority (per-user sockets, expiry)"),
    ("chat/handlers.py", "handlers (join)"),
    ("chat/rooms.py", "handlers (join)"),
    ("chat/", "chat, other"),
    ("gevent/", "gevent (greenlets, events, timers)"),
    ("greenlet/", "gevent (greenlets, events, timers)"),
)
#: Code that allocates for its callers: skipped when looking for the frame that owns a block.
GENERIC = ("/django/utils/", "/asgiref/", "/django/dispatch/", "/django/conf/", "<frozen", "/tracemalloc.py")


#: Allocations made on a line that parks the greenlet are its stack, copied to the heap by
#: greenlet when another one runs; on a line that builds a buffered reader, the 8 KiB rfile.
BY_SOURCE = (((".wait(", "_wait(", ".switch(", ".get("), "greenlet stacks (saved when parked)"),
             (("BufferedReader(",), "pywsgi handler and its rfile"))


def group_of(traceback):
    """Return the group of the innermost frame that is not generic (the stdlib is generic too)."""
    innermost = traceback[-1] if len(traceback) else None
    if innermost is not None:
        source = linecache.getline(innermost.filename, innermost.lineno)
        for needles, label in BY_SOURCE:
            if any(needle in source for needle in needles):
                return label, f"{_short(innermost.filename)}:{innermost.lineno}"
    for frame in reversed(traceback):  # most recent call first
        name = frame.filename
        if any(part in name for part in GENERIC) or _stdlib(name):
            continue
        for fragment, label in GROUPS:
            if fragment in name:
                return label, f"{_short(name)}:{frame.lineno}"
        return f"other: {_short(name)}", f"{_short(name)}:{frame.lineno}"
    last = traceback[-1] if len(traceback) else None
    where = f"{_short(last.filename)}:{last.lineno}" if last else "?"
    return "Python (stdlib only)", where


def _stdlib(name):
    return "/lib/python3" in name and "site-packages" not in name


def _short(name):
    for marker in ("site-packages/", "/chat/", "/lib/python3.11/"):
        if marker in name:
            return ("chat/" if marker == "/chat/" else "") + name.split(marker, 1)[1]
    return name


class Client:
    """The bench's sockets: a probe for the ``_memory`` hook, then idle joined sockets."""

    def __init__(self, server):
        self.server = server
        self.cookies = [login.login(server.url, f"load{n}", PASSWORD) for n in range(1, ACCOUNTS + 1)]
        self.sockets = []
        self.probe = self._open(self.cookies[0], join=False)

    def _open(self, cookie, join=True):
        sock, rest = wire.open_socket("127.0.0.1", self.server.port, "/ws/", cookie)
        sock.settimeout(30)
        conn = [sock, bytearray(rest)]
        if join:
            self._send(conn, {"type": "join", "room": ROOM, "ref": "j"})
            self._wait(conn, "joined")
        return conn

    def open_many(self, count):
        began = time.monotonic()
        for n in range(count):
            self.sockets.append(self._open(self.cookies[len(self.sockets) % ACCOUNTS]))
        return time.monotonic() - began

    def drain(self, quiet=0.5, most=60):
        """Read what the server sent the idle sockets (presence) until ``quiet`` s bring nothing.

        A real client reads its frames: left unread they would sit in the server's outboxes
        and be counted as the sockets' cost.
        """
        deadline = time.monotonic() + most
        while time.monotonic() < deadline:
            got = 0
            for sock, _ in self.sockets:
                sock.setblocking(False)
                try:
                    while data := sock.recv(1 << 20):
                        got += len(data)
                except BlockingIOError:
                    pass
                finally:
                    sock.settimeout(30)
            if not got:
                return
            time.sleep(quiet)

    def memory(self, action, **fields):
        self._send(self.probe, {"type": "_memory", "action": action, "ref": action, **fields})
        return self._wait(self.probe, "_memory", timeout=120)

    @staticmethod
    def _send(conn, event):
        conn[0].sendall(wire.frame(wire.OP_TEXT, json.dumps(event).encode()))

    @staticmethod
    def _wait(conn, kind, timeout=30):
        sock, buffer = conn
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for first, payload in wire.parse(buffer):
                if first & 0x0F == wire.OP_TEXT:
                    event = json.loads(payload)
                    if event.get("type") == kind:
                        return event
                    if event.get("type") == "error":
                        raise RuntimeError(f"the server answered {event}")
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError(f"the server closed the socket before {kind!r}")
            buffer += data
        raise TimeoutError(f"no {kind!r} within {timeout} s")

    def close(self):
        for sock, _ in [self.probe, *self.sockets]:
            sock.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * proc_stats.PAGE_KIB


def per_socket(before, after, count):
    """Return ``{key: (after - before) / count}`` for the keys that grew."""
    keys = set(before) | set(after)
    grown = {k: (after.get(k, 0) - before.get(k, 0)) / count for k in keys}
    return {k: round(v, 2) for k, v in sorted(grown.items(), key=lambda kv: -kv[1]) if v >= 0.01}


def rss_pass(client, worker, count):
    """Open ``count`` sockets; return RSS, greenlets and objects they added, per socket."""
    before, rss0 = client.memory("count"), rss_kib(worker)
    seconds = client.open_many(count)
    time.sleep(SETTLE)
    client.drain()
    after, rss1 = client.memory("count"), rss_kib(worker)
    return {"sockets": count, "open_seconds": round(seconds, 1),
            "rss_bytes_per_socket": round((rss1 - rss0) * 1024 / count),
            "greenlets_per_socket": round((after["greenlets"] - before["greenlets"]) / count, 2),
            "greenlet_runs_per_socket": per_socket(before["greenlet_runs"], after["greenlet_runs"], count),
            "objects_per_socket": dict(list(per_socket(before["types"], after["types"], count).items())[:40])}


def traced_pass(client, count):
    """Open ``count`` sockets under tracemalloc; return their live bytes by group and by line."""
    client.memory("start", frames=TRACE_FRAMES)
    first = client.memory("snapshot")
    client.open_many(count)
    time.sleep(SETTLE)
    client.drain()
    last = client.memory("snapshot")
    client.memory("stop")
    snapshots = [_load(first["path"]), _load(last["path"])]
    groups, lines = defaultdict(int), defaultdict(int)
    hook = [tracemalloc.Filter(False, "*/chat/testhooks.py", all_frames=True)]  # the probe's own
    snapshots = [snapshot.filter_traces(hook) for snapshot in snapshots]
    for stat in snapshots[1].compare_to(snapshots[0], "traceback"):
        label, where = group_of(stat.traceback)
        groups[label] += stat.size_diff
        lines[where] += stat.size_diff
    top = sorted(lines.items(), key=lambda kv: -kv[1])[:30]
    return {"traced_bytes_per_socket": round(sum(groups.values()) / count),
            "groups": {k: round(v / count) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "lines": {k: round(v / count) for k, v in top}}


def _load(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # tracemalloc.Snapshot.load, without leaving the file behind
    finally:
        os.remove(path)


PARKED = r"""
import patches  # noqa: F401  (as a worker: gevent patched first)
import gc, json, os, sys, tracemalloc
import gevent, gevent.event
count, depth = int(sys.argv[1]), int(sys.argv[2])
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def park(event, n):
    return park(event, n - 1) if n else event.wait()
event = gevent.event.Event()
gevent.sleep(0); gc.collect()
before = rss(); tracemalloc.start()
greenlets = [gevent.spawn(park, event, depth) for _ in range(count)]
gevent.sleep(0.1); gc.collect()
traced = tracemalloc.get_traced_memory()[0]; tracemalloc.stop()
print(json.dumps({"rss": (rss() - before) / count, "traced": traced / count}))
event.set(); gevent.joinall(greenlets)
"""


def parked_greenlet(depth, count=2000):
    """Return the RSS and traced bytes of one greenlet parked ``depth`` calls deep on an Event."""
    out = subprocess.run([*harness.taskset(harness.SERVER_CPU), harness.PYTHON, "-c", PARKED, str(count),
                          str(depth)], cwd=harness.ROOT, check=True, capture_output=True, text=True)
    return {k: round(v) for k, v in json.loads(out.stdout).items()}


def table(result):
    """Return the report: per socket, RSS, then the traced groups, then what is not traced."""
    rss, traced = result["rss"], result["traced"]
    parked = result["parked_greenlet"]
    greenlets = rss["greenlets_per_socket"]
    untraced = rss["rss_bytes_per_socket"] - traced["traced_bytes_per_socket"]
    stacks = greenlets * (parked["rss"] - parked["traced"])
    rows = [("RSS per socket (pass 1)", rss["rss_bytes_per_socket"]),
            ("traced by tracemalloc (pass 2)", traced["traced_bytes_per_socket"]),
            *[(f"  {label}", size) for label, size in traced["groups"].items() if abs(size) >= 16],
            ("not traced: RSS - traced", untraced),
            (f"  greenlets: {greenlets:g} a socket x {parked['rss'] - parked['traced']:,} B untraced "
             "(data stack pages)", round(stacks)),
            ("  the rest (allocator slack, arenas, libev, ...)", round(untraced - stacks))]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'item':<{width}}  bytes/socket", f"{'-' * width}  ------------"]
    lines += [f"{name:<{width}}  {size:>12,}" for name, size in rows]
    lines.append("")
    lines.append(f"greenlets a socket: {greenlets:g} ({rss['greenlet_runs_per_socket']}); one parked "
                 f"{PARK_DEPTH} calls deep: {parked['rss']:,} B RSS, {parked['traced']:,} B traced")
    lines.append("objects a socket (gc-tracked, by type): " + ", ".join(
        f"{name.rsplit('.', 1)[-1]} {n:g}" for name, n in list(rss["objects_per_socket"].items())[:15]))
    lines.append("top lines (bytes a socket): " + ", ".join(
        f"{where} {size:,}" for where, size in list(traced["lines"].items())[:12]))
    return "\n".join(lines)


PARK_DEPTH = 30  # about the depth of a socket's reader: pywsgi, Django's middleware, the view


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000, help="sockets opened in each pass")
    parser.add_argument("--port", type=int, default=8311,
                        help="our server's port (not S1's, so that it can run beside the scenarios)")
    parser.add_argument("--label", default="", help="suffix of the result file (e.g. main, after)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(harness.LOAD_CPU)})
    harness.PORTS["ours"] = args.port
    database = harness.Database()
    server = harness.Server("ours", database, accounts=ACCOUNTS, env=QUIET)
    try:
        worker = proc_stats.tree(server.proc.pid)[1]
        client = Client(server)
        client.open_many(20)  # the room, its cursor and the caches exist before anything is measured
        client.drain()
        result = {"rss": rss_pass(client, worker, args.sockets), "traced": traced_pass(client, args.sockets)}
        client.close()
    finally:
        server.stop()
    result["parked_greenlet"] = parked_greenlet(PARK_DEPTH)
    report = table(result)
    print(report)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "command": " ".join(["bench/socket_cost.py", *sys.argv[1:]]), "machine": harness.versions(),
              **result, "table": report}
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    path = harness.RESULTS / f"socket_cost{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
