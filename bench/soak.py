"""Soak: moderate load for a long while, sampling the worker's memory, fds, greenlets and DB connections.

    .venv/bin/python bench/soak.py [--minutes 10] [--users 1000] [--rooms 10] [--senders 20] [--rate 50]

Moderate load by default: 100 sockets a room, 50 messages/s in all, 5,000 deliveries/s.

The server runs as in the other scenarios (one worker on CPU 0 with its PostgreSQL, the load
on CPU 1), with the test hooks on so that a probe socket can ask for a greenlet census (it
runs the garbage collector on the hub: the monitor's threshold is raised to 0.5 s for it).
Passes when the worker's memory grows under 5 % from the end of warm-up to the end.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import LOAD_CPU, PYTHON, RESULTS, ROOT, Database, Server, taskset, versions  # noqa: E402
from bench.roundtrip import Connection  # noqa: E402
from chatload import login, wire  # noqa: E402


def worker_of(master):
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return int(out[0])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def database_connections(database, pid):
    import psycopg2

    with psycopg2.connect(database.server.get_uri("postgres")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [f"chat:{pid}"])
        return cursor.fetchone()[0]


def probe(server):
    """A signed-in socket that asks the worker for its greenlet census."""
    cookie = login.login(server.url, "load1", "chat-load-test")
    sock, rest = wire.open_socket("127.0.0.1", server.port, "/ws/", cookie)
    return Connection(sock, rest, wire.DIALECTS["chat"])


def census(conn, n):
    conn.send({"type": "_census", "ref": f"census-{n}"})
    return conn.wait(lambda event: event.get("type") == "_census", timeout=30)


def sample_loop(server, database, load, every):
    master, samples, conn = server.proc.pid, [], probe(server)
    began = time.time()
    while load.poll() is None:
        worker = worker_of(master)
        counted = census(conn, len(samples))
        samples.append({"t": round(time.time() - began), "rss_kib": rss_kib(worker),
                        "fds": len(os.listdir(f"/proc/{worker}/fd")), "greenlets": counted["greenlets"],
                        "sessions": counted["sessions"], "db_connections": database_connections(database, worker)})
        print(json.dumps(samples[-1]), flush=True)
        deadline = time.time() + every
        while time.time() < deadline and load.poll() is None:
            conn.send({"type": "ping", "ref": "keepalive"})  # the probe must not go idle
            time.sleep(min(5, every))
    return samples


def memory_growth(samples, warmup_minutes):
    """Growth of RSS from the end of warm-up to the last sample taken with every socket open.

    A final sample taken as the load closed its sockets shows what was released, not growth.
    """
    full = max(sample["sessions"] for sample in samples)
    loaded = [s for s in samples if s["sessions"] == full]
    warm = [s for s in loaded if s["t"] >= warmup_minutes * 60] or loaded
    return (warm[-1]["rss_kib"] - warm[0]["rss_kib"]) / warm[0]["rss_kib"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50, help="messages/s over all rooms")
    parser.add_argument("--every", type=float, default=20, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=2, help="minutes of warm-up before judging")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    database = Database()
    server = Server("ours", database, accounts=50, rooms=args.rooms,
                    env={"CHAT_TEST_HOOKS": "1", "CHAT_MAX_BLOCKING_TIME": "0.5"})
    out = RESULTS / "soak-load.json"
    try:
        load = subprocess.Popen([*taskset(LOAD_CPU), PYTHON, str(ROOT / "loadtest.py"), "--url", server.url,
                                 "--users", str(args.users), "--rooms", str(args.rooms), "--senders", str(args.senders),
                                 "--rate", str(args.rate),
                                 "--duration", str(args.minutes * 60), "--ramp", "20", "--sessions", "",
                                 "--quiet", "--json", str(out)], cwd=ROOT, stdout=sys.stderr)
        time.sleep(15)  # signed in and ramped up
        samples = sample_loop(server, database, load, args.every)
        load.wait()
    finally:
        blocks = server.hub_blocks()
        server.stop()
    growth = memory_growth(samples, args.warmup)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "command": " ".join(sys.argv),
              "machine": versions(), "args": vars(args), "samples": samples, "hub_blocks": blocks,
              "rss_growth_after_warmup": round(growth, 4), "load": json.loads(out.read_text())}
    (RESULTS / "soak.json").write_text(json.dumps(record, indent=2))
    print(f"memory growth after warm-up: {growth:.1%} ({'pass' if growth < 0.05 else 'FAIL'}); "
          f"hub blocks over 0.5 s: {blocks}; saved {RESULTS / 'soak.json'}")


if __name__ == "__main__":
    main()
