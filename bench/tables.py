"""Print the Markdown tables of docs/benchmarks.md from bench/results/*.json.

    .venv/bin/python bench/tables.py
"""
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = {"ours": "this project", "channels": "Channels (uvicorn)", "flask": "Flask-SocketIO", "bare": "bare gevent-websocket"}


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def s1(record):
    print("| server | sockets | opened | time to open all (s) | KiB/socket | one message to all (ms) | lost | hub blocks |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in record["rows"]:
        print(f"| {NAMES[row['server']]} | {row['sockets']:,} | {row['opened']:,} | {row['open_s']} | "
              f"{row['kib_per_socket']} | {row['reach_all_ms']} | {row['lost']} | {_dash(row['hub_blocks'])} |")


def s2(record):
    print("| server | run | highest step passed (msg/s) | µs server CPU / delivery at 200 | at 400 | "
          "p99 at 200 (ms) | at 400 | PostgreSQL CPU (s) | lost (passed steps) | lost (all) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in record["rows"]:
        steps = {step["rate"]: step for step in row["steps"] if step["sent"]}
        passed_lost = sum(step["expected"] - step["delivered"] for step in steps.values() if step["passed"])
        print(f"| {NAMES[row['server']]} | {row['run']} | {_dash(row['highest_passed'])} | "
              f"{_cell(steps, 200, 'cpu_us_per_delivery')} | {_cell(steps, 400, 'cpu_us_per_delivery')} | "
              f"{_cell(steps, 200, 'p99')} | {_cell(steps, 400, 'p99')} | {row['postgres_cpu_s']} | "
              f"{passed_lost} | {row['lost']} |")
    print()
    print("| server | run | step (msg/s) | delivered | share | deliveries/s | p50 | p90 | p99 | max (ms) | µs CPU/delivery | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in record["rows"]:
        for step in row["steps"]:
            if step["sent"]:
                print(f"| {NAMES[row['server']]} | {row['run']} | {step['rate']:g} | {step['delivered']:,} | "
                      f"{step['delivery_ratio']} | {step['deliveries_per_s']:,} | {step['p50']} | {step['p90']} | "
                      f"{step['p99']} | {step['max']} | {_dash(step.get('cpu_us_per_delivery'))} | "
                      f"{'pass' if step['passed'] else 'FAIL'} |")


def s3(record):
    print("| server | round trips | p50 (ms) | p90 | p99 | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in record["rows"]:
        print(f"| {NAMES[row['server']]} | {row['count']} | {row['p50']} | {row['p90']} | {row['p99']} | {row['max']} |")


def soak(record):
    print("| minute | worker RSS (KiB) | fds | greenlets | sessions | DB connections |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, sample in enumerate(record["samples"]):
        if sample["t"] % 60 < record["args"]["every"] or n == len(record["samples"]) - 1:
            print(f"| {sample['t'] / 60:.1f} | {sample['rss_kib']:,} | {sample['fds']} | {sample['greenlets']} | "
                  f"{sample['sessions']} | {sample['db_connections']} |")
    load = record["load"]
    print(f"\n{load['sockets']['opened']:,} sockets, {load['sent']:,} messages sent, {load['deliveries']:,} "
          f"deliveries; latency p50 {load['latency_ms']['p50']} / p99 {load['latency_ms']['p99']} ms; lost "
          f"{load['lost']}, duplicates {load['duplicates']}, errors {load['errors'] or 0}, closes "
          f"{load['closes'] or 0}. Memory growth from the end of warm-up to the last sample with every "
          f"socket open: {record['rss_growth_after_warmup']:.2%}; hub blocks reported: {record['hub_blocks']}.")


def s4(record):
    print("| server | replaced by | sockets | all back and resumed (s) | away p50 / p99 (s) | lost seqs | "
          "duplicated | deliveries never received | closes | 503s | hub blocks | page p50 / max (ms) | "
          "page failures | DB connections max |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in record["rows"]:
        closes = ", ".join(f"{code}: {n:,}" for code, n in sorted(row["closes"].items()))
        away = f"{_seconds(row['away_p50_ms'])} / {_seconds(row['away_p99_ms'])}"
        print(f"| {NAMES[row['server']]} | {row['mode']} | {row['sockets']:,} | {_dash(row['recovered_s'])} | "
              # A server without storage starts its seqs again: per-seq counts mean nothing then.
              f"{away} | {'n/a' if row['seq_resets'] else row['lost']} | {row['duplicates']} | "
              f"{row['undelivered']:,} | {closes} | {row['busy_503']} | "
              f"{_dash(row['hub_blocks'])} | {_dash(row['page_p50_ms'])} / {_dash(row['page_max_ms'])} | "
              f"{row['page_failures']} of {row['page_probes']} | {_dash(row['db_connections_max'])} |")


def transports(record):
    """The HTTP long-poll against the WebSocket on one server, step by step (bench/transports.py)."""
    print(f"{record['receivers']} users in one room, {record['senders']} of them sending; "
          f"{record['duration']:g} s per step.\n")
    print("| transport | run | step (msg/s) | delivered | share | p50 (ms) | p90 | p99 | max | µs server CPU / delivery |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in record["rows"]:
        for step in row["steps"]:
            print(f"| {row['transport']} | {row['run']} | {step['rate']:g} | {step['delivered']:,} | "
                  f"{step['delivery_ratio']} | {step['p50']} | {step['p90']} | {step['p99']} | {step['max']} | "
                  f"{_dash(step.get('cpu_us_per_delivery'))} |")
    print()
    print("| transport | run | lost | duplicates | gaps | errors | closes | HTTP requests | events / answer | "
          "superseded | new streams | PostgreSQL CPU (s) | hub blocks |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in record["rows"]:
        http = row.get("http") or {}
        per_answer = round(http["events"] / http["applied"], 1) if http.get("applied") else None
        print(f"| {row['transport']} | {row['run']} | {row['lost']} | {row['duplicates']} | {row['gaps']} | "
              f"{row['errors'] or 'none'} | {row['closes'] or 'none'} | {_dash(http.get('requests'))} | "
              f"{_dash(per_answer)} | {_dash(http.get('stale'))} | {_dash(http.get('new_streams'))} | "
              f"{row['postgres_cpu_s']} | {_dash(row['hub_blocks'])} |")


def _seconds(ms):
    return "-" if ms is None else f"{ms / 1000:.1f}"


def _cell(steps, rate, key):
    return _dash(steps[rate].get(key)) if rate in steps else "-"


def _dash(value):
    return "-" if value is None else value


def main():
    for name, render in (("s1", s1), ("s2", s2), ("s3", s3), ("s4", s4), ("soak", soak),
                         ("transports", transports)):
        record = load(name)
        if record is None:
            print(f"({name}: no results yet)\n", file=sys.stderr)
            continue
        print(f"### {name}: `{record.get('command', '')}`, {record['date'][:16]} UTC\n")
        render(record)
        print()


if __name__ == "__main__":
    main()
