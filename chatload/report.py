"""Merge the tallies of load processes, judge each step, and print, save or plot the result."""
import json
import math
from array import array
from collections import Counter

from chatload.user import Tally


def merge(tallies):
    """Add several processes' tallies into one."""
    total = Tally()
    for tally in tallies:
        for name in ARRAYS:
            getattr(total, name).extend(getattr(tally, name))
        for name in COUNTERS:
            getattr(total, name).update(getattr(tally, name))
        for name in ("late", "gaps", "duplicates", "reordered", "foreign", "cpu", *RECONNECT_COUNTS):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        total.by_send.update(tally.by_send)
        total.max_lag = max(total.max_lag, tally.max_lag)
        total.open_seconds = max(total.open_seconds, tally.open_seconds)
        for room, (stayed, seen, newest) in tally.rooms.items():
            mine = total.rooms.setdefault(room, [0, 0, 0])
            mine[0] += stayed
            mine[1] += seen
            mine[2] = max(mine[2], newest)
    return total


ARRAYS = ("open_times", "sent_at", "latency", "downtime", "back_at")
COUNTERS = ("failed", "closes", "errors", "sent", "acked", "http")
#: What the HTTP transport counts (chatload/longpoll.py): requests sent, answers applied,
#: answers dropped for a newer request's, events carried, streams started again on another
#: worker, requests without an answer, 429s, answers whose n broke the rule of section 7, newest
#: requests answered "superseded" (an older one reached the server later), and answers carrying
#: other events under an n already seen (section 7 lets a resend append new events to it).
HTTP_COUNTS = ("requests", "applied", "stale", "events", "new_streams", "failed", "throttled", "bad_n",
               "superseded_newest", "n_reused")
RECONNECT_COUNTS = ("busy", "hints", "reconnects", "not_back", "resets", "resent")


def dump_tally(tally, path):
    """Save a tally as JSON (raw figures, not percentiles), for ``--merge`` on another machine."""
    data = {name: getattr(tally, name).tolist() for name in ARRAYS}
    data.update({name: {str(k): v for k, v in getattr(tally, name).items()} for name in COUNTERS})
    data.update({name: getattr(tally, name) for name in ("late", "max_lag", "gaps", "duplicates", "reordered",
                                                         "foreign", "cpu", "open_seconds", "rooms",
                                                         *RECONNECT_COUNTS)})
    data["by_send"] = [[room, at, n] for (room, at), n in tally.by_send.items()]
    with open(path, "w") as f:
        json.dump(data, f)


def load_tally(path):
    """Read a tally saved by ``dump_tally``."""
    with open(path) as f:
        data = json.load(f)
    tally = Tally()
    for name in ARRAYS:
        getattr(tally, name).extend(data[name])
    for name in COUNTERS:
        getattr(tally, name).update(data.get(name, {}))
    for name in ("late", "max_lag", "gaps", "duplicates", "reordered", "foreign", "cpu", "open_seconds", "rooms"):
        setattr(tally, name, data[name])
    for name in RECONNECT_COUNTS:
        setattr(tally, name, data.get(name, 0))
    tally.by_send.update({(room, at): n for room, at, n in data.get("by_send", ())})
    return tally


def percentiles(values, points=(50, 90, 99)):
    """Return {"p50": ms, ..., "max": ms} of ``values`` in seconds (empty: Nones)."""
    ordered = sorted(values)
    if not ordered:
        return {**{f"p{p}": None for p in points}, "max": None}
    pick = {f"p{p}": ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)] for p in points}
    return {name: round(value * 1000, 2) for name, value in {**pick, "max": ordered[-1]}.items()}


def steps_of(tally, rates, duration, pause, server_cpu=(), max_p99=None, min_delivery=None, members=None):
    """Return one dict per step: offered rate, sends, deliveries, latency, verdict.

    ``members``: sockets per room (default: those that stayed to the end, known after the run).
    """
    if members is None:
        members = {room: stayed for room, (stayed, _, _) in tally.rooms.items()}
    period = duration + pause
    latencies = [array("d") for _ in rates]
    for sent_at, latency in zip(tally.sent_at, tally.latency):
        k = int((sent_at + 1e-5) // period)  # send times travel rounded to the microsecond
        if 0 <= k < len(rates):
            latencies[k].append(latency)
    results = []
    for k, rate in enumerate(rates):
        sent = sum(n for key, n in tally.sent.items() if key.split(" ")[0] == str(k))
        expected = sum(n * members.get(key.split(" ", 1)[1], 0)
                       for key, n in tally.sent.items() if key.split(" ")[0] == str(k))
        delivered = len(latencies[k])
        step = {"rate": rate, "sent": sent, "acked": tally.acked.get(k, 0), "expected": expected,
                "delivered": delivered, "delivery_ratio": round(delivered / expected, 4) if expected else None,
                "deliveries_per_s": round(delivered / duration, 1), **percentiles(latencies[k])}
        if k < len(server_cpu) and server_cpu[k] is not None:
            step["server_cpu_s"] = round(server_cpu[k], 3)
            step["cpu_us_per_delivery"] = round(server_cpu[k] / delivered * 1e6, 1) if delivered else None
        step["passed"] = judge(step, max_p99, min_delivery)
        results.append(step)
    return results


def judge(step, max_p99, min_delivery):
    """A step passes when its p99 and its share of deliveries are within the limits given."""
    if not step["sent"]:
        return None
    if max_p99 is not None and (step["p99"] is None or step["p99"] > max_p99):
        return False
    return not (min_delivery is not None and (step["delivery_ratio"] or 0) < min_delivery)


def lost(tally):
    """Seqs a socket that stayed to the end never received, summed over sockets."""
    return sum(stayed * newest - seen for stayed, seen, newest in tally.rooms.values())


def by_send(tally):
    """Count per message sent, against the sockets that stayed in its room: deliveries missing
    and deliveries beyond one per socket (a resend stored twice gets a new seq: the seq check
    cannot see it)."""
    members = {room: stayed for room, (stayed, _, _) in tally.rooms.items()}
    expected = sum(n * members.get(key.split(" ", 1)[1], 0) for key, n in tally.sent.items())
    delivered = extra = 0
    for (room, _), n in tally.by_send.items():
        delivered += min(n, members.get(room, 0))
        extra += max(0, n - members.get(room, 0))
    return {"undelivered": expected - delivered, "extra": extra}


def reconnects(tally):
    """Return what the reconnections came to: how many, how long away, when the last came back."""
    return {"hints": tally.hints, "busy_503": tally.busy, "reconnects": tally.reconnects,
            "not_back": tally.not_back, "resets": tally.resets, "resent": tally.resent,
            "downtime_ms": percentiles(tally.downtime, (50, 99)),
            "last_back_at": round(max(tally.back_at), 3) if tally.back_at else None}


def summary(tally, config, steps, server=None):
    opened = len(tally.open_times)
    result = {
        "config": config,
        "sockets": {"requested": config["users"], "opened": opened, "failed": dict(tally.failed),
                    "open_time_ms": percentiles(tally.open_times), "open_seconds": round(tally.open_seconds, 2)},
        "sent": sum(tally.sent.values()), "acked": sum(tally.acked.values()),
        "late_sends": tally.late, "max_send_lag_ms": round(tally.max_lag * 1000, 1),
        "deliveries": len(tally.latency), "latency_ms": percentiles(tally.latency, (50, 90, 99)),
        "gaps": tally.gaps, "duplicates": tally.duplicates, "reordered": tally.reordered,
        "lost": lost(tally), "other_messages": tally.foreign,
        "errors": dict(tally.errors), "closes": {str(k): v for k, v in tally.closes.items()},
        "steps": steps, "client_cpu_s": round(tally.cpu, 2),
        "by_send": by_send(tally), "reconnect": reconnects(tally),
    }
    if config.get("transport") == "http":
        result["http"] = {name: tally.http.get(name, 0) for name in HTTP_COUNTS}
    if server:
        result["server"] = server
    return result


def table(result):
    """Return the human summary printed at the end of a run."""
    s, lat = result["sockets"], result["latency_ms"]
    lines = [
        f"sockets   opened {s['opened']} of {s['requested']}, failed {sum(s['failed'].values())} "
        f"{s['failed'] or ''} in {s['open_seconds']} s; time to open p50 {s['open_time_ms']['p50']} ms, "
        f"p99 {s['open_time_ms']['p99']} ms, max {s['open_time_ms']['max']} ms",
        f"sent      {result['sent']} (acknowledged {result['acked']}, late {result['late_sends']}, "
        f"max lag {result['max_send_lag_ms']} ms)",
        f"delivered {result['deliveries']}; latency p50 {lat['p50']} p90 {lat['p90']} "
        f"p99 {lat['p99']} max {lat['max']} ms",
        f"checked   gaps {result['gaps']}, duplicates {result['duplicates']}, "
        f"reordered {result['reordered']}, lost {result['lost']}",
        f"errors    {result['errors'] or 'none'}; closes {result['closes'] or 'none'}",
        "per send  undelivered {undelivered}, delivered more than once {extra}".format(**result["by_send"]),
        "comeback  {reconnects} reconnected ({hints} hints, {busy_503} handshakes got 503, {resent} resent), "
        "{not_back} not back, {resets} seq resets; away p50 {p50} p99 {p99} max {max} ms".format(
            **result["reconnect"], **result["reconnect"]["downtime_ms"]),
        f"client    {result['client_cpu_s']} s of CPU in the load processes",
    ]
    if "http" in result:
        h = result["http"]
        per = round(h["events"] / h["applied"], 1) if h["applied"] else 0
        lines.append(f"http      {h['requests']} requests, {h['applied']} answers applied ({per} events each), "
                     f"{h['stale']} superseded, {h['new_streams']} new streams, {h['failed']} failed, "
                     f"{h['throttled']} throttled (429), {h['bad_n']} with a wrong n, "
                     f"{h['superseded_newest']} newest superseded, {h['n_reused']} n reused with other events")
    if "server" in result:
        srv = result["server"]
        lines.append(f"server    {srv.get('kib_per_socket')} KiB/socket (RSS {srv['rss_before_kib']} -> "
                     f"{srv['rss_open_kib']} KiB), CPU {srv['cpu_s']} s")
    header = f"{'rate/s':>7} {'sent':>7} {'delivered':>10} {'ratio':>7} {'deliv/s':>9} {'p50':>7} " \
             f"{'p90':>7} {'p99':>7} {'max':>7} {'µs/deliv':>9}  verdict"
    lines += ["", header]
    for st in result["steps"]:
        verdict = {True: "pass", False: "FAIL", None: "-"}[st["passed"]]
        lines.append(f"{st['rate']:>7} {st['sent']:>7} {st['delivered']:>10} {_f(st['delivery_ratio']):>7} "
                     f"{st['deliveries_per_s']:>9} {_f(st['p50']):>7} {_f(st['p90']):>7} {_f(st['p99']):>7} "
                     f"{_f(st['max']):>7} {_f(st.get('cpu_us_per_delivery')):>9}  {verdict}")
    return "\n".join(lines)


def _f(value):
    return "-" if value is None else f"{value:g}"


def save_json(result, path):
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def plot(tally, path, title):
    """Write a PNG: deliveries per second, and latency p50/p99 per second of sending."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    per_second, by_send = Counter(), {}
    for sent_at, latency in zip(tally.sent_at, tally.latency):
        per_second[int(sent_at + latency)] += 1
        by_send.setdefault(int(sent_at), array("d")).append(latency)
    figure, (top, bottom) = pyplot.subplots(2, 1, sharex=True, figsize=(9, 6))
    seconds = sorted(per_second)
    top.plot(seconds, [per_second[t] for t in seconds])
    top.set_ylabel("deliveries / s")
    top.set_title(title)
    seconds = sorted(by_send)
    for point in ("p50", "p99"):
        bottom.plot(seconds, [percentiles(by_send[t])[point] for t in seconds], label=point)
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds after the first send")
    bottom.set_yscale("log")
    bottom.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
