"""S4, the reconnect storm: a server holding N sockets (a few senders flowing) is replaced.

Ours is replaced twice: a reload (``kill -HUP`` of the gunicorn master: new worker, old one
drained) and a stop and start (SIGTERM, wait for the exit, start again on the same port and
database). The peers are stopped and started (they have no reload and no resume: what they
lose is reported). The load client (``loadtest.py --reconnect``) comes back after each close,
rejoins with ``since`` and checks every seq; meanwhile a prober reads a page every 0.2 s and
counts the database's connections. Used by ``bench/scenarios.py s4``.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from bench import peers
from bench.harness import LOAD_CPU, PYTHON, RESULTS, ROOT, Server, taskset

SENDERS, RATE = 4, 2  # a low rate: 10,000 sockets in one room make it 20,000 deliveries a second
SETTLE = 5.0  # seconds of sending before the signal
SEND_SECONDS = 45.0  # the whole sending window: the storm must be over well before its end
PROBE_EVERY = 0.2


class Prober(threading.Thread):
    """Read ``paths`` every 0.2 s and count the database's connections, until stopped."""

    def __init__(self, url, paths, database, name):
        super().__init__(daemon=True)
        self.url, self.paths, self.database, self.name = url, paths, database, name
        self.samples, self.connections, self.done = [], [], threading.Event()

    def run(self):
        import psycopg2

        db = psycopg2.connect(self.database.server.get_uri("postgres"))
        db.autocommit = True
        while not self.done.wait(PROBE_EVERY):
            for path in self.paths:
                began = time.time()
                try:
                    status = urllib.request.urlopen(self.url + path, timeout=10).status
                except urllib.error.HTTPError as error:
                    status = error.code
                except OSError:
                    status = None
                self.samples.append((began, path, status, time.time() - began))
            with db.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.name,))
                self.connections.append(cursor.fetchone()[0])
        db.close()

    def summary(self, since):
        """Page latency and failures from ``since`` on: 404 is an answer (a peer has no pages)."""
        after = [s for s in self.samples if s[0] >= since]
        answered = sorted(latency for _, _, status, latency in after if status is not None and status < 500)
        pick = (lambda q: round(answered[min(len(answered) - 1, int(q * len(answered)))] * 1000, 1)) if answered else (
            lambda q: None)
        return {"page_probes": len(after), "page_failures": len(after) - len(answered),
                "page_p50_ms": pick(0.5), "page_max_ms": round(answered[-1] * 1000, 1) if answered else None,
                "db_connections_max": max(self.connections, default=None)}


def loadtest_command(server, label, sockets, in_flight):
    out, ready = RESULTS / f"{label}.json", RESULTS / f"{label}.ready"
    ready.unlink(missing_ok=True)
    command = [*taskset(LOAD_CPU), PYTHON, str(ROOT / "loadtest.py"), "--url", server.url, "--json", str(out),
               "--quiet", "--users", str(sockets), "--senders", str(SENDERS), "--accounts", "50",
               "--rate", str(RATE), "--duration", str(SEND_SECONDS), "--pause", "1", "--ramp", "0",
               "--send-after-open", "--connect-concurrency", str(in_flight), "--open-timeout", "300",
               "--drain", "60", "--reconnect", "--ready-file", str(ready)]
    if server.name != "ours":
        command += ["--no-login", "--dialect", peers.DIALECT[server.name], "--ws-path", peers.WS_PATH[server.name]]
    else:
        command += ["--sessions", ""]
    return command, out, ready


def replace(server, mode):
    """Reload (SIGHUP) or stop and start ``server``; return when the signal went."""
    if mode == "reload":
        os.kill(server.proc.pid, signal.SIGHUP)
        return
    server.stop()
    server.start_again()


def storm(database, name, sockets, mode, in_flight):
    """Run one storm; return its row."""
    label = f"s4-{name}-{mode}-{sockets}"
    server = Server(name, database, accounts=50)
    prober = Prober(server.url, ["/readyz", "/accounts/login/"] if name == "ours" else ["/"], database,
                    f"bench_{name}")
    try:
        command, out, ready = loadtest_command(server, label, sockets, in_flight)
        load = subprocess.Popen(command, cwd=ROOT, stdout=sys.stderr)
        deadline = time.time() + 600
        while not ready.exists() and load.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if not ready.exists():
            raise RuntimeError(f"{label}: the sockets never opened (loadtest exit {load.poll()})")
        opened = json.loads(ready.read_text())["opened"]
        prober.start()
        time.sleep(SETTLE)
        signalled = time.time()
        replace(server, mode)
        if load.wait(timeout=SEND_SECONDS + 300) != 0:
            raise RuntimeError(f"{label}: loadtest failed with exit code {load.returncode}")
        result = json.loads(out.read_text())
    finally:
        prober.done.set()
        blocks = server.hub_blocks()
        server.stop()
    comeback, per_send = result["reconnect"], result["by_send"]
    last_back = comeback["last_back_at"]
    row = {"server": name, "mode": mode, "sockets": sockets, "opened": opened,
           "recovered_s": round(last_back - signalled, 2) if last_back else None,
           "reconnects": comeback["reconnects"], "not_back": comeback["not_back"], "hints": comeback["hints"],
           "busy_503": comeback["busy_503"], "away_p50_ms": comeback["downtime_ms"]["p50"],
           "away_p99_ms": comeback["downtime_ms"]["p99"], "sent": result["sent"],
           "lost": result["lost"], "duplicates": result["duplicates"], "gaps": result["gaps"],
           "undelivered": per_send["undelivered"], "extra": per_send["extra"], "seq_resets": comeback["resets"],
           "errors": result["errors"], "closes": result["closes"], "hub_blocks": blocks,
           **prober.summary(signalled)}
    print(json.dumps(row), flush=True)
    return row


def s4(database, names, sizes, in_flight):
    rows = []
    for name in names:
        for sockets in sizes:
            for mode in (("reload", "restart") if name == "ours" else ("restart",)):
                rows.append(storm(database, name, sockets, mode, in_flight))
    return rows
