"""Cross-process delivery latency of the brokers: postgres and redis, memory as a baseline.

Run from the repository root: ``.venv/bin/python bench/brokers.py [--count 200]``. For each
broker it starts two gunicorns (one worker each) on that broker, signs one user in to each,
and sends ``--count`` messages one at a time from the first: each message's time from the
send to its arrival on the other server's socket, including the insert and commit in
PostgreSQL. The memory row (one gunicorn, both sockets on it, no broker hop) is for scale, not
a floor: there one process does the work that two share in the other rows. Uses the embedded
PostgreSQL (database ``chat_bench``, never ``DATABASE_URL``) and its own ``redis-server`` on a
free port (the redis row is left out when Debian's redis-server is not installed). Takes about
15 to 25 s, so it is a script rather than a test.
"""
import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import patches  # noqa: E402,F401  (first: cooperative sockets, like the tests)

os.environ.pop("DATABASE_URL", None)  # never a real database: the embedded one
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from project import embedded  # noqa: E402
from tests.live import Gunicorn, connect, receive, receive_type, send  # noqa: E402
from tests.test_redis import RedisServer  # noqa: E402

WARM_UP = 20
FAST = {"CHAT_RATE_LIMIT": 100000, "CHAT_RATE_BURST": 100000}


def prepare_database():
    import django
    from django.core.management import call_command

    server = embedded.ensure_database_url("chat_bench")
    django.setup()
    call_command("migrate", verbosity=0)
    return server


def make_pair():
    """Two users with sessions and a room: ((key_a, key_b), slug)."""
    from django.contrib.auth import (BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY,
                                     get_user_model)
    from django.contrib.sessions.backends.db import SessionStore

    from chat.models import Room

    tag = secrets.token_hex(4)
    keys = []
    for name in ("a", "b"):
        user = get_user_model().objects.create(username=f"bench-{tag}-{name}")
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        keys.append(store.session_key)
    slug = f"bench-{tag}"
    Room.objects.create(slug=slug, name=slug)
    return keys, slug


def next_message(ws, timeout=10):
    while True:
        event = receive(ws, timeout)
        if event["type"] == "message":
            return event
        if event["type"] == "error":
            raise RuntimeError(f"the server answered with an error: {event}")


def latencies(sender_server, receiver_server, count):
    (a_key, b_key), room = make_pair()
    a, b = connect(sender_server, a_key), connect(receiver_server, b_key)
    for ws in (a, b):
        send(ws, type="join", room=room)
        receive_type(ws, "joined")
    times = []
    for n in range(WARM_UP + count):
        started = time.perf_counter()
        send(a, type="send", room=room, body=f"latency {n}", ref=f"l{n}")
        got = next_message(b)
        elapsed = time.perf_counter() - started
        if got["seq"] != n + 1:
            raise RuntimeError(f"expected seq {n + 1}, got {got}")
        next_message(a)  # the sender's own copy
        if n >= WARM_UP:
            times.append(elapsed)
    a.close()
    b.close()
    return sorted(times)


def start_hubs(servers):
    """A worker's hub (and its broker's listener) starts with its first socket."""
    for server in servers:
        connect(server, make_pair()[0][0]).close()


def wait_subscribed(redis_server, servers, timeout=10):
    names = [f"chat-listen:{pid}" for server in servers for pid in server.worker_pids()]
    deadline = time.monotonic() + timeout
    while not all(any(c["psub"] == "1" for c in redis_server.clients_named(n)) for n in names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all of {names} subscribed in {timeout} s")
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="messages per broker (default 200)")
    args = parser.parse_args()

    database = prepare_database()
    database_url = os.environ["DATABASE_URL"]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-brokers-"))
    started = []

    def gunicorn(**env):
        server = Gunicorn(database_url, log_dir, **FAST, **env).start()
        started.append(server)
        return server

    rows = []
    try:
        memory = gunicorn(CHAT_BROKER="memory")
        rows.append(("memory", "one gunicorn (baseline)", latencies(memory, memory, args.count)))
        postgres = [gunicorn(CHAT_BROKER="postgres") for _ in range(2)]
        start_hubs(postgres)
        time.sleep(0.5)  # LISTEN: a message sent before it would be missed until the next one
        rows.append(("postgres", "two gunicorns", latencies(*postgres, args.count)))
        binary = shutil.which("redis-server")
        if binary is None:
            print("redis-server is not installed: no redis row", file=sys.stderr)
        else:
            redis_server = RedisServer(binary, log_dir).start()
            started.append(redis_server)
            pair = [gunicorn(CHAT_BROKER="redis", REDIS_URL=redis_server.url) for _ in range(2)]
            start_hubs(pair)
            wait_subscribed(redis_server, pair)
            rows.append(("redis", "two gunicorns", latencies(*pair, args.count)))
    finally:
        for process in reversed(started):
            process.stop()
        embedded.stop(database)

    print(f"\nsend-to-arrival latency, {args.count} messages one at a time "
          f"(after {WARM_UP} to warm up), milliseconds; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    header = f"{'broker':<10}{'setup':<26}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>8}"
    print(header)
    print("-" * len(header))
    for name, setup, times in rows:
        ms = [t * 1000 for t in times]
        pick = lambda q: ms[min(len(ms) - 1, int(len(ms) * q))]  # noqa: E731
        print(f"{name:<10}{setup:<26}{pick(0.5):>8.2f}{pick(0.9):>8.2f}{pick(0.99):>8.2f}"
              f"{ms[-1]:>8.2f}{statistics.fmean(ms):>8.2f}")


if __name__ == "__main__":
    main()
