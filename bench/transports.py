"""The HTTP long-poll transport against the WebSocket: latency and server CPU per delivery.

    .venv/bin/python bench/transports.py [--rates 10,50,200] [--receivers 50] [--runs 2]

One server (ours, one worker, pinned to CPU 0 with its PostgreSQL; the load on CPU 1, as in
bench/harness.py) serves both transports in the same run: ``loadtest.py`` runs the same steps
over ``--transport ws`` and ``--transport http``, one after the other, ``--runs`` times
(alternating which goes first). Each step's server CPU (the gunicorn tree's user + system time
from /proc, before and after the step) is divided by its deliveries. Results:
bench/results/transports.json; ``bench/tables.py`` prints the table of docs/benchmarks.md.
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

from bench.harness import LOAD_CPU, RESULTS, Database, Server, versions  # noqa: E402

SENDERS = 10
ACCOUNTS = 20  # users share them (each sender has its own): fewer log-ins on the server's core
# The load's few senders exceed a browser's pace: the per-stream request limit (10 a second by
# default) would answer 429 to them, as CHAT_RATE_LIMIT would to their sends.
HTTP_LIMITS = {"CHAT_HTTP_REQUEST_RATE": "100000", "CHAT_HTTP_REQUEST_BURST": "100000"}


def run_transport(server, database, transport, run, args):
    """Run the steps over one transport; return a row with its steps and PostgreSQL's CPU."""
    pg_before = database.cpu()
    result = server.loadtest(f"transports-{transport}-run{run}", "--transport", transport,
                             "--users", str(args.receivers), "--senders", str(SENDERS),
                             "--accounts", str(ACCOUNTS), "--rate", args.rates,
                             "--duration", str(args.duration), "--pause", "2", "--ramp", "2", "--drain", "10")
    return {"transport": transport, "run": run, "steps": result["steps"], "lost": result["lost"],
            "duplicates": result["duplicates"], "gaps": result["gaps"], "errors": result["errors"],
            "closes": result["closes"], "http": result.get("http"), "opened": result["sockets"]["opened"],
            "postgres_cpu_s": round(database.cpu() - pg_before, 2), "hub_blocks": server.hub_blocks()}


def machine():
    """Return nproc and the CPU model, besides the versions of bench/harness.py."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    # --all: this process is pinned to the load core, and plain nproc counts only that one.
    nproc = subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip()
    return {"nproc": nproc, "model": model, **versions()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="10,50,200", help="messages/s of the senders together, per step")
    parser.add_argument("--receivers", type=int, default=50, help="users in the one room (senders included)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per step")
    parser.add_argument("--runs", type=int, default=2, help="times each transport runs (alternating first)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    database = Database()
    began = time.time()
    server = Server("ours", database, accounts=ACCOUNTS, env=HTTP_LIMITS)
    rows = []
    try:
        for run in range(1, args.runs + 1):
            order = ("ws", "http") if run % 2 else ("http", "ws")
            for transport in order:
                rows.append(run_transport(server, database, transport, run, args))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "steps"}), flush=True)
    finally:
        server.stop()
    record = {"scenario": "transports", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "seconds": round(time.time() - began), "command": " ".join(["bench/transports.py", *sys.argv[1:]]),
              "receivers": args.receivers, "senders": SENDERS, "duration": args.duration,
              "machine": machine(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transports.json").write_text(json.dumps(record, indent=2))
    print(f"saved {RESULTS / 'transports.json'}")


if __name__ == "__main__":
    main()
