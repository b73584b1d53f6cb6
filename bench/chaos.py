"""Chaos soak (issue 13 item 7): steady chat under random faults, then prove nothing was lost or doubled.

    .venv/bin/python bench/chaos.py [--minutes 10] [--sockets 1000] [--rooms 10] [--senders 20]
        [--rate 20] [--every 20,40] [--broker postgres|redis] [--seed N]
    .venv/bin/python bench/chaos.py --table bench/results/chaos-postgres.json

Two gunicorn instances of two workers each (the project's gunicorn.conf.py) share a PostgreSQL
of the soak's own (and a redis-server of its own with ``--broker redis``), all on loopback.
``--sockets`` signed-in users, one socket each, spread over the rooms and both instances;
``--senders`` of them send ``--rate`` messages a second in all. Every ``--every`` seconds
(a random pause within the range) one fault, in shuffled rounds of every kind
(bench/faults.py). Clients reconnect with backoff, resume with ``since`` and resend what was
not acknowledged with the same ``ref`` (bench/chaos_client.py).

At the end (the database is the truth): each room's seqs are unique and gapless from 1 to
``last_seq``; every acknowledged (user, room, ref) is stored once, with the seq it was
acknowledged with; every socket received every seq of its room after its first ``joined``,
once (holes are losses, repeats duplicates) and in order. Results:
bench/results/chaos-<broker>.json, its Markdown tables on standard output.
"""
if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import patches  # noqa: F401  (gevent and psycogreen, before anything opens a socket)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

from bench.chaos_client import ChaosClient  # noqa: E402
from bench.faults import KINDS, Cluster, Faults, kinds_for  # noqa: E402

logger = logging.getLogger("chaos")
RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "chaos"

# Accounts, rooms and one session per account, in bulk (no PBKDF2: the password is unusable).
MAKE_USERS = """
import json, sys
from datetime import timedelta
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone
from django.utils.crypto import get_random_string
from chat.models import Room
count, rooms, prefix = {count}, {rooms}, {prefix!r}
User = get_user_model()
users = [User(username=f"{{prefix}}{{n}}") for n in range(1, count + 1)]
for user in users:
    user.set_unusable_password()
User.objects.bulk_create(users, batch_size=1000)
Room.objects.bulk_create(Room(slug=f"{{prefix}}-{{n}}", name=f"{{prefix}}-{{n}}") for n in range(1, rooms + 1))
store, expire, keys, sessions = SessionStore(), timezone.now() + timedelta(days=1), {{}}, []
for user in User.objects.filter(username__startswith=prefix):
    keys[user.username] = key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
    data = {{SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash()}}
    sessions.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
Session.objects.bulk_create(sessions, batch_size=1000)
sys.stdout.write(json.dumps(keys))
"""


@dataclass
class Config:
    broker: str = "postgres"
    duration: float = 600.0  # seconds of sending (and of faults)
    sockets: int = 1000
    rooms: int = 10
    senders: int = 20
    rate: float = 20.0  # messages a second, all senders together
    every: tuple = (20.0, 40.0)  # seconds between the starts of two faults
    ramp: float = 20.0  # seconds over which the sockets open
    settle: float = 90.0  # seconds for the last acknowledgements, then as long for the last deliveries
    pg_down: float = 2.0  # seconds PostgreSQL stays stopped
    instances: int = 2
    workers: int = 2
    seed: int = None


def short(broker):
    """The version ``make test`` runs (tests/test_chaos.py): about a minute, every kind at least once."""
    kinds = len(kinds_for(broker))
    return Config(broker=broker, duration=50.0 if kinds == 5 else 55.0, sockets=100, rooms=4, senders=8,
                  rate=8.0, every=(7.0, 10.0) if kinds == 5 else (6.0, 9.0), ramp=2.0, settle=60.0)


def make_users(cluster, count, rooms):
    """Create ``count`` accounts with a session each and ``rooms`` rooms; return ({name: key}, slugs)."""
    keys = json.loads(cluster.manage("shell", "--no-imports", "-c",
                                     MAKE_USERS.format(count=count, rooms=rooms, prefix=PREFIX)))
    return keys, [f"{PREFIX}-{n}" for n in range(1, rooms + 1)]


def make_clients(config, keys, rooms, cluster, run_id, rng):
    """Socket i joins room i mod R on instance (i div R) mod I: each room's senders on both instances."""
    clients = []
    for i in range(config.sockets):
        instance = cluster.instances[(i // len(rooms)) % len(cluster.instances)]
        name = f"{PREFIX}{i + 1}"
        clients.append(ChaosClient(name, keys[name], rooms[i % len(rooms)], "127.0.0.1", instance.port,
                                   run_id, random.Random(rng.random())))
    return clients


def open_all(clients, ramp, timeout):
    """Start the clients over ``ramp`` seconds; wait until every one has joined."""
    pool, began = Pool(50), time.monotonic()
    for n, client in enumerate(clients):
        gevent.sleep(max(0.0, began + ramp * n / len(clients) - time.monotonic()))
        pool.spawn(client.start)
    wait_for(lambda: all(c.live for c in clients), timeout, "every socket joined")
    logger.info("%d sockets joined in %.1f s", len(clients), time.monotonic() - began)


def wait_for(condition, timeout, what):
    """Poll ``condition`` until true or ``timeout``; tell whether it came true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logger.warning("gave up waiting for %s after %.0f s", what, timeout)
            return False
        gevent.sleep(0.2)
    return True


def send_steadily(senders, rate, until):
    """Send ``rate`` messages a second in all, the senders taking turns, until ``until``."""
    began, n = time.monotonic(), 0
    while time.monotonic() < until:
        senders[n % len(senders)].send_new()
        n += 1
        gevent.sleep(max(0.0, began + n / rate - time.monotonic()))


def inject_faults(faults, kinds, rng, every, began, until, record):
    """One fault every ``every`` seconds (start to start) in shuffled rounds of ``kinds``, until ``until``."""
    round_, next_at = [], time.monotonic() + rng.uniform(*every) / 2
    while next_at < until:
        gevent.sleep(max(0.0, next_at - time.monotonic()))
        if not round_:
            round_ = rng.sample(kinds, len(kinds))
        kind = round_.pop()
        started = time.monotonic()
        try:
            detail = faults.inject(kind)
        except Exception as error:  # a fault that failed is recorded, and the soak goes on
            logger.exception("fault %s failed", kind)
            detail = {"failed": f"{type(error).__name__}: {error}"}
        record.append({"kind": kind, "at_s": round(started - began, 1), **detail})
        logger.info("fault %s %s", kind, detail)
        next_at = started + rng.uniform(*every)


def progress(clients, faults, began, every=10.0):
    while True:
        gevent.sleep(every)
        logger.info("t=%.0fs live %d/%d acknowledged %d pending %d reconnects %d faults %d",
                    time.monotonic() - began, sum(c.live for c in clients), len(clients),
                    sum(len(c.acked) for c in clients), sum(len(c.pending) for c in clients),
                    sum(c.reconnects for c in clients), len(faults))


def run(config, log_dir):
    """Run the soak described by ``config``; return its record (see ``verdict``)."""
    rng = random.Random(config.seed)
    run_id = os.urandom(3).hex()
    with Cluster(config.broker, log_dir, config.instances, config.workers) as cluster:
        keys, rooms = make_users(cluster, config.sockets, config.rooms)
        clients = make_clients(config, keys, rooms, cluster, run_id, rng)
        try:
            open_all(clients, config.ramp, config.ramp + 60)
            record = soak(config, cluster, clients, rooms, rng)
        finally:
            gevent.joinall([gevent.spawn(c.stop) for c in clients], timeout=30)
        from bench.chaos_check import check_database, dump_messages, scan_logs, verdict

        database = check_database(cluster.postgres, rooms, clients)
        record.update(verdict(clients, database, record.pop("last_seqs")), server_logs=scan_logs(cluster.logs()))
        if not record["passed"]:  # what the database held, beside the servers' logs
            dump_messages(cluster.postgres, rooms, Path(log_dir) / "messages.json")
    record.update(config=asdict(config), log_dir=str(log_dir))
    return record


def soak(config, cluster, clients, rooms, rng):
    """Send and inject faults for ``config.duration``, then let everything settle."""
    from bench.chaos_check import last_seqs

    faults = Faults(cluster, rng, rooms, pg_down=config.pg_down)
    senders = clients[:config.senders]
    began = time.monotonic()
    until = began + config.duration
    log = []
    watcher = gevent.spawn(progress, clients, log, began)
    try:
        gevent.joinall([gevent.spawn(send_steadily, senders, config.rate, until),
                        gevent.spawn(inject_faults, faults, kinds_for(config.broker), rng, config.every,
                                     began, until, log)], raise_error=True)
        acked = wait_for(lambda: not any(c.pending for c in clients), config.settle, "the last acknowledgements")
        seqs = last_seqs(cluster.postgres, rooms)
        caught_up = wait_for(lambda: all(c.caught_up(seqs[c.room]) for c in clients), config.settle,
                             "every socket to catch up")
    finally:
        watcher.kill()
    logger.info("settled in %.0f s after the last send", time.monotonic() - until)
    return {"faults": dict(Counter(f["kind"] for f in log)), "fault_log": log, "last_seqs": last_seqs(
        cluster.postgres, rooms), "settled": {"acknowledged": acked, "caught_up": caught_up,
                                                "seconds": round(time.monotonic() - until, 1)}}


def machine():
    with open("/proc/meminfo") as f:
        total_kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    return {"nproc": os.cpu_count(), "memory_gib": round(total_kib / 2 ** 20, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def tables(record):
    """Return the Markdown tables of a record (faults by kind, then the outcome)."""
    kinds = {kind: record["faults"][kind] for kind in KINDS if kind in record["faults"]}
    lines = ["| " + " | ".join(["fault", *kinds, "all"]) + " |",
             "| --- |" + " ---: |" * (len(kinds) + 1),
             "| injected | " + " | ".join(str(n) for n in kinds.values()) + f" | {sum(kinds.values())} |", "",
             "| sockets | messages acknowledged | stored | delivered | of expected | resumed sockets | resumes "
             "| lost | duplicated | out of order | verdict |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
             f"| {record['sockets']:,} | {record['acknowledged']:,} | {record['stored']:,} | "
             f"{record['delivered']:,} | {record['expected_deliveries']:,} | {record['resumed_sockets']:,} | "
             f"{record['resumes']:,} | {record['lost']} | {record['duplicated']} | {record['reordered']} | "
             f"{'pass' if record['passed'] else 'FAIL'} |"]
    return "\n".join(lines) + "\n"


def arguments(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Config()
    p.add_argument("--broker", choices=("postgres", "redis"), default=defaults.broker)
    p.add_argument("--minutes", type=float, default=defaults.duration / 60, help="of sending and faults")
    p.add_argument("--sockets", type=int, default=defaults.sockets)
    p.add_argument("--rooms", type=int, default=defaults.rooms)
    p.add_argument("--senders", type=int, default=defaults.senders)
    p.add_argument("--rate", type=float, default=defaults.rate, help="messages a second, all senders together")
    p.add_argument("--every", default="20,40", help="seconds between faults: lowest,highest")
    p.add_argument("--ramp", type=float, default=defaults.ramp, help="seconds over which the sockets open")
    p.add_argument("--seed", type=int, help="for the faults' kinds, order and times")
    p.add_argument("--short", action="store_true", help="the version make test runs (about a minute)")
    p.add_argument("--json", help="where to save the record (default bench/results/chaos-<broker>.json)")
    p.add_argument("--table", metavar="JSON", help="only print the tables of a saved record")
    args = p.parse_args(argv)
    if args.senders > args.sockets or min(args.sockets, args.rooms, args.senders) < 1 or args.rate <= 0:
        p.error("need 1 <= --senders <= --sockets, --rooms >= 1 and --rate > 0")
    return args


def main():
    args = arguments()
    if args.table:
        sys.stdout.write(tables(json.loads(Path(args.table).read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # a line per pg_ctl otherwise
    low, high = (float(x) for x in args.every.split(","))
    config = short(args.broker) if args.short else Config(
        broker=args.broker, duration=args.minutes * 60, sockets=args.sockets, rooms=args.rooms,
        senders=args.senders, rate=args.rate, every=(low, high), ramp=args.ramp)
    config.seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    log_dir = RESULTS / f"chaos-{args.broker}-{stamp:%Y%m%dT%H%M%S}"
    record = {"date": stamp.isoformat(timespec="seconds"), "command": " ".join(["bench/chaos.py", *sys.argv[1:]]),
              "machine": machine(), **run(config, log_dir)}
    out = Path(args.json) if args.json else RESULTS / f"chaos-{args.broker}.json"
    out.write_text(json.dumps(record, indent=2))
    logger.info("saved %s; server logs in %s", out, log_dir)
    sys.stdout.write(tables(record))
    sys.exit(0 if record["passed"] else 1)


if __name__ == "__main__":
    main()
