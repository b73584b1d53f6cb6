"""The benchmark scenarios of docs/benchmarks.md, each from scratch with one command.

    .venv/bin/python bench/scenarios.py s1 [--servers ours,channels,flask,bare] [--sizes 1000,3000,10000] [--in-flight 1000]
    .venv/bin/python bench/scenarios.py s2 [--servers ...] [--runs 2]
    .venv/bin/python bench/scenarios.py s3 [--servers ...] [--count 500]
    .venv/bin/python bench/scenarios.py s4 [--servers ...] [--sizes 10000] [--in-flight 1000]

S1 idle sockets, S2 fan-out steps, S3 sequential round trips, S4 the reconnect storm of a
restart (bench/storm.py). The server under test and its
PostgreSQL run on CPU 0, the load on CPU 1. Results: bench/results/<scenario>.json and .md.
"""
import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import LOAD_CPU, RESULTS, SERVERS, Database, Server, versions  # noqa: E402
from bench.roundtrip import round_trips  # noqa: E402
from bench.storm import s4  # noqa: E402

S2_RATES = "20,50,100,200,400,800"


def s1(database, names, sizes, in_flight):
    rows = []
    for name in names:
        for size in sizes:
            server = Server(name, database, accounts=50)
            try:
                result = server.loadtest(f"s1-{name}-{size}", "--users", str(size), "--senders", "1",
                                         "--accounts", "50", "--rate", "1", "--duration", "1", "--pause", "3",
                                         "--ramp", "0", "--send-after-open", "--connect-concurrency", str(in_flight),
                                         "--drain", "30", "--open-timeout", "120")
            finally:
                blocks = server.hub_blocks()
                server.stop()
            sockets, srv = result["sockets"], result.get("server", {})
            rows.append({"server": name, "sockets": size, "opened": sockets["opened"],
                         "failed": sum(sockets["failed"].values()), "open_s": sockets["open_seconds"],
                         "open_p99_ms": sockets["open_time_ms"]["p99"], "kib_per_socket": srv.get("kib_per_socket"),
                         "deliveries": result["deliveries"], "reach_all_ms": result["latency_ms"]["max"],
                         "reach_p50_ms": result["latency_ms"]["p50"], "lost": result["lost"], "hub_blocks": blocks})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def s2(database, names, runs):
    rows = []
    for run in range(1, runs + 1):
        for name in names:
            server = Server(name, database, accounts=20)
            pg_before = database.cpu()
            try:
                result = server.loadtest(f"s2-{name}-run{run}", "--users", "100", "--senders", "10", "--accounts", "20",
                                         "--rate", S2_RATES, "--duration", "10", "--pause", "2", "--ramp", "2",
                                         "--max-p99", "250", "--min-delivery", "0.95", "--drain", "10")
            finally:
                blocks = server.hub_blocks()
                server.stop()
            passed = [step["rate"] for step in result["steps"] if step["passed"]]
            row = {"server": name, "run": run, "highest_passed": max(passed) if passed else None,
                   "steps": result["steps"], "lost": result["lost"], "duplicates": result["duplicates"],
                   "postgres_cpu_s": round(database.cpu() - pg_before, 2), "hub_blocks": blocks,
                   "errors": result["errors"], "closes": result["closes"]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "steps"}), flush=True)
    return rows


def s3(database, names, count):
    rows = []
    for name in names:
        server = Server(name, database, accounts=1)
        try:
            row = {"server": name, **round_trips(server, count)}
        finally:
            row["hub_blocks"] = server.hub_blocks()
            server.stop()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=("s1", "s2", "s3", "s4"))
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma list of %s" % ", ".join(SERVERS))
    parser.add_argument("--sizes", help="S1: socket counts (default 1000,3000,10000); S4 (default 10000)")
    parser.add_argument("--in-flight", type=int, default=1000, help="S1, S4: handshakes in flight")
    parser.add_argument("--runs", type=int, default=2, help="S2: how many times to run every server")
    parser.add_argument("--count", type=int, default=500, help="S3: round trips")
    args = parser.parse_args()
    names = args.servers.split(",")
    unknown = set(names) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this process is load too (S3's client)
    database = Database()
    began = time.time()
    sizes = [int(n) for n in (args.sizes or ("10000" if args.scenario == "s4" else "1000,3000,10000")).split(",")]
    if args.scenario == "s1":
        rows = s1(database, names, sizes, args.in_flight)
    elif args.scenario == "s4":
        rows = s4(database, names, sizes, args.in_flight)
    elif args.scenario == "s2":
        rows = s2(database, names, args.runs)
    else:
        rows = s3(database, names, args.count)
    record = {"scenario": args.scenario, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "seconds": round(time.time() - began), "command": " ".join(["bench/scenarios.py", *sys.argv[1:]]),
              "machine": versions(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.scenario}.json").write_text(json.dumps(record, indent=2))
    print(f"saved {RESULTS / (args.scenario + '.json')}")


if __name__ == "__main__":
    main()
