"""Cross-process latency and throughput of the brokers: postgres and redis, memory as a baseline.

Run from the repository root: ``.venv/bin/python bench/brokers.py [--count 200]``. For each
broker it starts two gunicorns (one worker each) on that broker, signs one user in to each,
and sends ``--count`` messages one at a time from the first: each message's time from the
send to its arrival on the other server's socket, including the insert and commit in
PostgreSQL. The memory row (one gunicorn, both sockets on it, no broker hop) is for scale, not
a floor: there one process does the work that two share in the other rows. Uses the embedded
PostgreSQL (database ``chat_bench``, never ``DATABASE_URL``) and its own ``redis-server`` on a
free port (the redis row is left out when Debian's redis-server is not installed). Takes about
15 to 25 s, so it is a script rather than a test.

``--throughput [--senders 20] [--duration 8]`` measures sustained rates instead: ``--senders``
users on the first gunicorn, each in a closed loop (send, wait for its own broadcast, send
again) in one fresh room, and one receiver on the second gunicorn that counts the deliveries
and checks that seqs arrive gapless, once each and in order. The first second of each run is
left out of the rates and latencies. Prints a markdown table with the command, the date and
``nproc``; about 40 s with the defaults. All clients run as greenlets of this one process, so
its CPU share is reported too: on a small machine the client competes with the servers.
"""
import argparse
import dataclasses
import datetime
import json
import os
import resource
import secrets
import shlex
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

import gevent  # noqa: E402
import websocket  # noqa: E402

from project import embedded  # noqa: E402
from tests.live import Gunicorn, connect, receive, receive_type, send  # noqa: E402
from tests.test_redis import RedisServer  # noqa: E402

WARM_UP = 20
FAST = {"CHAT_RATE_LIMIT": 100000, "CHAT_RATE_BURST": 100000}
THROUGHPUT_WARM_UP = 1.0  # seconds at the start of a throughput run left out of its numbers
REPLY_TIMEOUT = 10  # seconds a sender waits for its own broadcast
DRAIN_TIMEOUT = 10  # seconds the remote receiver gets to catch up after the last send


def prepare_database():
    import django
    from django.core.management import call_command

    server = embedded.ensure_database_url("chat_bench")
    django.setup()
    call_command("migrate", verbosity=0)
    return server


def make_room(users=2):
    """``users`` users with sessions and a fresh room: ([session key, ...], slug)."""
    from django.contrib.auth import (BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY,
                                     get_user_model)
    from django.contrib.sessions.backends.db import SessionStore

    from chat.models import Room

    tag = secrets.token_hex(4)
    keys = []
    for n in range(users):
        user = get_user_model().objects.create(username=f"bench-{tag}-{n}")
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
    (a_key, b_key), room = make_room()
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
        connect(server, make_room()[0][0]).close()


def wait_subscribed(redis_server, servers, timeout=10):
    names = [f"chat-listen:{pid}" for server in servers for pid in server.worker_pids()]
    deadline = time.monotonic() + timeout
    while not all(any(c["psub"] == "1" for c in redis_server.clients_named(n)) for n in names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all of {names} subscribed in {timeout} s")
        time.sleep(0.05)


class Fleet:
    """The processes a run starts (gunicorns on the bench database, a redis-server)."""

    def __init__(self, database_url, log_dir):
        self.database_url = database_url
        self.log_dir = log_dir
        self.started = []

    def gunicorn(self, **env):
        server = Gunicorn(self.database_url, self.log_dir, **FAST, **env).start()
        self.started.append(server)
        return server

    def redis(self):
        """Start a redis-server; None when Debian's redis-server is not installed."""
        binary = shutil.which("redis-server")
        if binary is None:
            return None
        server = RedisServer(binary, self.log_dir).start()
        self.started.append(server)
        return server

    def stop(self, processes=None):
        """Stop ``processes`` (default: every one started), newest first."""
        for process in reversed(self.started if processes is None else processes):
            process.stop()


def broker_setups(fleet):
    """Yield ``(broker, setup, sender_server, receiver_server)``: memory, postgres, redis.

    Each broker's processes start when its turn comes and stop when the next one is asked
    for, so a row never shares the machine with the previous row's servers.
    """
    memory = fleet.gunicorn(CHAT_BROKER="memory")
    yield "memory", "one gunicorn (baseline)", memory, memory
    fleet.stop([memory])
    postgres = [fleet.gunicorn(CHAT_BROKER="postgres") for _ in range(2)]
    start_hubs(postgres)
    time.sleep(0.5)  # LISTEN: a message sent before it would be missed until the next one
    yield "postgres", "two gunicorns", *postgres
    fleet.stop(postgres)
    redis_server = fleet.redis()
    if redis_server is None:
        print("redis-server is not installed: no redis row", file=sys.stderr)
        return
    pair = [fleet.gunicorn(CHAT_BROKER="redis", REDIS_URL=redis_server.url) for _ in range(2)]
    start_hubs(pair)
    wait_subscribed(redis_server, pair)
    yield "redis", "two gunicorns", *pair
    fleet.stop([*pair, redis_server])


# Throughput mode ------------------------------------------------------------------------------

def receive_event(ws, timeout):
    """One JSON event, like ``receive``; a close frame raises a readable ``ConnectionError``."""
    ws.settimeout(timeout)
    text = ws.recv()
    if not text:  # websocket-client answers a close frame and returns ""
        raise ConnectionError("the server closed the socket")
    return json.loads(text)


def failure(error):
    """An exception as one short line for the report."""
    return f"{type(error).__name__}: {error}"


class Sender:
    """One user's closed loop: send, wait for that message's broadcast, send the next."""

    def __init__(self, ws, name):
        self.ws = ws
        self.name = name
        self.sent = {}  # ref -> perf_counter() at the send
        self.confirmed = {}  # ref -> (seq, perf_counter() at its broadcast)
        self.error = ""  # why the loop ended early, if it did

    def run(self, room, stop_at):
        """Send until ``stop_at`` (a ``perf_counter()`` time); the last reply is awaited."""
        n = 0
        try:
            while time.perf_counter() < stop_at:
                ref = f"{self.name}-{n}"
                self.sent[ref] = time.perf_counter()
                send(self.ws, type="send", room=room, body=f"throughput {ref}", ref=ref)
                seq = self.wait_for(ref)
                self.confirmed[ref] = (seq, time.perf_counter())
                n += 1
        except Exception as error:  # reported with the row; the other senders go on
            self.error = failure(error)

    def wait_for(self, ref):
        """Read the room's traffic until the broadcast of ``ref``; return its seq."""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            event = receive_event(self.ws, max(0.01, deadline - time.monotonic()))
            if event["type"] == "error":
                raise RuntimeError(f"the server answered with an error: {event}")
            if event["type"] == "message" and event["ref"] == ref:
                return event["seq"]


class Receiver:
    """Reads a room's messages on one socket: when each arrived, and whether seqs kept order."""

    def __init__(self, ws):
        self.ws = ws
        self.arrivals = {}  # ref -> perf_counter() at the first arrival
        self.seen = set()
        self.highest = 0
        self.gaps = self.duplicates = self.out_of_order = 0
        self.error = ""  # why it stopped before it was stopped, if it did

    def run(self):
        """Receive until killed (the caller bounds it) or until the socket fails."""
        try:
            while True:
                try:
                    event = receive_event(self.ws, REPLY_TIMEOUT)
                except websocket.WebSocketTimeoutException:
                    continue  # idle (nothing read): the caller decides when to stop
                if event["type"] == "message":
                    self.record(event["seq"], event["ref"], time.perf_counter())
        except Exception as error:
            self.error = failure(error)

    def record(self, seq, ref, at):
        """Count a gap (seq jumps ahead), a duplicate, or an old seq arriving late."""
        self.arrivals.setdefault(ref, at)
        if seq in self.seen:
            self.duplicates += 1
            return
        if seq > self.highest + 1:
            self.gaps += 1
        elif seq < self.highest:
            self.out_of_order += 1
        self.seen.add(seq)
        self.highest = max(self.highest, seq)


@dataclasses.dataclass
class Throughput:
    """One broker's throughput run; rates and latencies cover the measured window only."""

    committed_per_s: float  # sends whose broadcast came back to their sender
    delivered_per_s: float  # messages that arrived on the remote receiver
    latencies_ms: list  # send to remote arrival, sorted, of the messages sent in the window
    committed: int  # the whole run: warm-up and the last replies included
    lost: int  # committed, never arrived on the remote receiver
    gaps: int
    duplicates: int
    out_of_order: int
    cpu: dict  # "A", "B", "client", "machine" -> percent of one core in the window
    errors: list  # why senders or the receiver stopped early: the numbers are then partial


def join_room(server, key, room, sockets):
    """Connect with session ``key``, join ``room``; the socket is appended to ``sockets``."""
    ws = connect(server, key)
    sockets.append(ws)
    send(ws, type="join", room=room)
    receive_type(ws, "joined")
    return ws


def cpu_seconds(pids):
    """User plus system CPU seconds used so far by the processes ``pids`` (NaN if one ended)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            return float("nan")
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU seconds all cores together spent busy so far (the first line of /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(workers):
    """CPU seconds so far: each server's workers (``{label: pids}``), this process, all."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snapshot = {label: cpu_seconds(pids) for label, pids in workers.items()}
    return {**snapshot, "client": usage.ru_utime + usage.ru_stime,
            "machine": machine_busy_seconds()}


def worker_pids(sender_server, receiver_server):
    """``{"A": pids, "B": pids}`` of the servers' workers; only "A" when they are one server."""
    pids = {"A": sender_server.worker_pids()}
    if receiver_server is not sender_server:
        pids["B"] = receiver_server.worker_pids()
    return pids


def sleep_until(moment):
    gevent.sleep(max(0, moment - time.perf_counter()))


def drain(receiver, listening, seqs):
    """Wait (at most ``DRAIN_TIMEOUT``) for the receiver to see ``seqs``, then stop it."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while not seqs <= receiver.seen and not listening.dead and time.monotonic() < deadline:
        gevent.sleep(0.05)
    listening.kill(timeout=5)


def drive(loops, receiver, room, duration, workers):
    """Run the receiver and the senders: warm up, measure ``duration`` seconds, drain.

    Return the measured window (two ``perf_counter()`` times) and the CPU used in it (% of
    one core by label). Every wait is bounded; the greenlets are gone on return.
    """
    listening = gevent.spawn(receiver.run)
    start = time.perf_counter() + THROUGHPUT_WARM_UP
    window = (start, start + duration)
    sending = [gevent.spawn(loop.run, room, window[1]) for loop in loops]
    try:
        sleep_until(window[0])
        before = cpu_snapshot(workers)
        sleep_until(window[1])
        after = cpu_snapshot(workers)
        gevent.joinall(sending, timeout=REPLY_TIMEOUT + 5)  # each waits for one last reply
        committed = {seq for loop in loops for seq, _ in loop.confirmed.values()}
        drain(receiver, listening, committed)
    finally:
        gevent.killall([listening, *sending], timeout=5)
    cpu = {label: 100 * (after[label] - before[label]) / duration for label in after}
    return window, cpu


def throughput(sender_server, receiver_server, senders, duration):
    """``senders`` closed loops on one server, one receiver on the other: a ``Throughput``."""
    keys, room = make_room(senders + 1)
    sockets = []
    try:
        receiver = Receiver(join_room(receiver_server, keys[0], room, sockets))
        loops = [Sender(join_room(sender_server, key, room, sockets), f"s{n}")
                 for n, key in enumerate(keys[1:])]
        workers = worker_pids(sender_server, receiver_server)
        window, cpu = drive(loops, receiver, room, duration, workers)
        return summarise(loops, receiver, window, cpu)
    finally:
        for ws in sockets:
            ws.close(timeout=1)


def summarise(loops, receiver, window, cpu):
    """Turn what the senders and the receiver recorded into a ``Throughput``."""
    start, end = window
    sent = {ref: at for loop in loops for ref, at in loop.sent.items()}
    confirmed = {ref: c for loop in loops for ref, c in loop.confirmed.items()}
    arrivals = receiver.arrivals
    latencies_ms = sorted(1000 * (arrivals[ref] - at) for ref, at in sent.items()
                          if start <= at < end and ref in arrivals)
    errors = [f"{loop.name}: {loop.error}" for loop in loops if loop.error]
    if receiver.error:
        errors.append(f"receiver: {receiver.error}")
    return Throughput(
        committed_per_s=sum(start <= at < end for _, at in confirmed.values()) / (end - start),
        delivered_per_s=sum(start <= at < end for at in arrivals.values()) / (end - start),
        latencies_ms=latencies_ms, committed=len(confirmed),
        lost=len({seq for seq, _ in confirmed.values()} - receiver.seen),
        gaps=receiver.gaps, duplicates=receiver.duplicates, out_of_order=receiver.out_of_order,
        cpu=cpu, errors=errors)


# Reports --------------------------------------------------------------------------------------

def percentile(ordered, q):
    """The ``q`` quantile (0 to 1) of the sorted list ``ordered``, by nearest rank."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def print_latencies(rows, args):
    print(f"\nsend-to-arrival latency, {args.count} messages one at a time "
          f"(after {WARM_UP} to warm up), milliseconds; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    header = f"{'broker':<10}{'setup':<26}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>8}"
    print(header)
    print("-" * len(header))
    for name, setup, times in rows:
        ms = [t * 1000 for t in times]
        print(f"{name:<10}{setup:<26}{percentile(ms, 0.5):>8.2f}{percentile(ms, 0.9):>8.2f}"
              f"{percentile(ms, 0.99):>8.2f}{ms[-1]:>8.2f}{statistics.fmean(ms):>8.2f}")


def print_throughput(rows, args):
    """The markdown report: the command, date and nproc, then one table row per broker."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nproc = len(os.sched_getaffinity(0))
    print(f"\n`{shlex.join(sys.orig_argv)}` ({date}; nproc {nproc}; "
          f"load average {os.getloadavg()[0]:.1f})\n")
    print(f"{args.senders} closed-loop senders on server A, one receiver on server B, one room; "
          f"{args.duration:g} s measured after {THROUGHPUT_WARM_UP:g} s of warm-up. CPU is % of "
          "one core in that window: each server's worker, this script's client greenlets, and the "
          f"whole machine (at most {100 * nproc}).\n")
    print("| broker | setup | committed msg/s | remote deliveries/s | p50 ms | p99 ms "
          "| committed (whole run) | lost | gaps | dups | out of order "
          "| CPU % A / B / client / machine |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, setup, r in rows:
        ms = r.latencies_ms or [float("nan")]
        cpu = " / ".join(f"{r.cpu[k]:.0f}" if k in r.cpu else "-"
                         for k in ("A", "B", "client", "machine"))
        print(f"| {name} | {setup} | {r.committed_per_s:.0f} | {r.delivered_per_s:.0f} "
              f"| {percentile(ms, 0.5):.1f} | {percentile(ms, 0.99):.1f} | {r.committed} "
              f"| {r.lost} | {r.gaps} | {r.duplicates} | {r.out_of_order} | {cpu} |")
    for name, _, r in rows:
        if r.errors:
            print(f"\n{name}: partial numbers, {len(r.errors)} client(s) stopped early: "
                  + "; ".join(r.errors[:3]) + ("; ..." if len(r.errors) > 3 else ""))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="messages per broker (default 200)")
    parser.add_argument("--throughput", action="store_true",
                        help="measure sustained rates instead of one-at-a-time latency")
    parser.add_argument("--senders", type=int, default=20,
                        help="throughput: closed-loop senders on server A (default 20)")
    parser.add_argument("--duration", type=float, default=8,
                        help="throughput: seconds measured per broker (default 8)")
    return parser.parse_args()


def main():
    args = parse_args()
    database = prepare_database()
    fleet = Fleet(os.environ["DATABASE_URL"], Path(tempfile.mkdtemp(prefix="bench-brokers-")))
    rows = []
    try:
        for name, setup, a, b in broker_setups(fleet):
            if args.throughput:
                print(f"{name}: {args.senders} senders for {THROUGHPUT_WARM_UP:g} + "
                      f"{args.duration:g} s", file=sys.stderr, flush=True)
                rows.append((name, setup, throughput(a, b, args.senders, args.duration)))
            else:
                rows.append((name, setup, latencies(a, b, args.count)))
    finally:
        fleet.stop()
        embedded.stop(database)
    (print_throughput if args.throughput else print_latencies)(rows, args)


if __name__ == "__main__":
    main()
