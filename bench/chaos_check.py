"""The chaos soak's verdict: the database against what the clients were told and received.

- every room's seqs are unique and gapless, 1 to ``Room.last_seq``;
- every acknowledged (user, room, ref) is stored exactly once, with the acknowledged seq;
- every socket received each seq after its first ``joined`` up to ``last_seq``, once, in
  order: a seq never received is a loss, a second copy a duplicate (``Stream``, kept by
  each chaos_client.ChaosClient).
"""
from collections import Counter

EXAMPLES = 10  # clients listed with their losses or duplicates, for the investigation


class Stream:
    """Copies of each seq one socket received, from its first ``joined`` (``start``) on."""

    def __init__(self):
        self.start = None  # the seq of the first joined: every later seq is owed
        self.last = None  # the highest seq received
        self.copies = bytearray()  # [seq - start - 1] -> copies received (at most 255)
        self.duplicates = self.reordered = 0

    def begin(self, seq):
        self.start = self.last = seq

    def seen(self, seq):
        i = seq - self.start - 1
        return i < 0 or (i < len(self.copies) and self.copies[i] > 0)

    def take(self, seq, in_order=True):
        """Count one copy of ``seq``; ``in_order``: it came live (or in a joined), so after ``last``."""
        if seq <= self.start:
            self.duplicates += 1  # the first joined already covered it
            return
        i = seq - self.start - 1
        if i >= len(self.copies):
            self.copies.extend(bytes(i + 1 - len(self.copies) + 256))
        if self.copies[i]:
            self.duplicates += 1
        elif in_order and seq < self.last:
            self.reordered += 1
        self.copies[i] = min(255, self.copies[i] + 1)
        self.last = max(self.last, seq)

    def missing(self, upto):
        """Return the seqs after ``start`` up to ``upto`` never received."""
        return [seq for seq in range(self.start + 1, upto + 1) if not self.seen(seq)]

    def received(self):
        return sum(1 for copies in self.copies if copies)


def last_seqs(postgres, rooms):
    """Return ``{slug: last_seq}`` for ``rooms``."""
    return dict(postgres.execute("SELECT slug, last_seq FROM chat_room WHERE slug = ANY(%s)", [rooms]))


def check_database(postgres, rooms, clients):
    """Check the rooms' sequences and every acknowledged message; return counts and problems."""
    problems = []
    rows = postgres.execute(
        "SELECT r.slug, r.last_seq, count(m.id), count(DISTINCT m.seq), coalesce(min(m.seq), 0), "
        "coalesce(max(m.seq), 0) FROM chat_room r LEFT JOIN chat_message m ON m.room_id = r.id "
        "WHERE r.slug = ANY(%s) GROUP BY r.slug, r.last_seq", [rooms])
    for slug, last, count, distinct, lowest, highest in rows:
        if not (count == distinct == highest == last and lowest == min(1, count)):
            problems.append(f"{slug}: last_seq {last}, {count} rows, {distinct} seqs from {lowest} to {highest}")
    stored = {}
    for username, slug, ref, seq in postgres.execute(
            "SELECT u.username, r.slug, m.ref, m.seq FROM chat_message m JOIN auth_user u ON u.id = m.user_id "
            "JOIN chat_room r ON r.id = m.room_id WHERE r.slug = ANY(%s)", [rooms]):
        stored.setdefault((username, slug, ref), []).append(seq)
    acknowledged = set()
    for client in clients:
        for ref, seq in client.acked.items():
            key = (client.name, client.room, ref)
            acknowledged.add(key)
            if stored.get(key) != [seq]:
                problems.append(f"{client.name} {ref} acknowledged as {client.room}#{seq}, stored as "
                                f"{stored.get(key)}")
    return {"rooms": len(rows), "stored": sum(len(seqs) for seqs in stored.values()),
            "stored_unacknowledged": len(set(stored) - acknowledged),
            "acknowledged_stored_once": sum(1 for key in acknowledged if len(stored.get(key, ())) == 1),
            "problems": problems}


def dump_messages(postgres, rooms, path):
    """Save every stored message of ``rooms`` (seq, user, ref, time) as JSON, to investigate a failure."""
    import json

    rows = postgres.execute(
        "SELECT r.slug, m.seq, u.username, m.ref, m.created FROM chat_message m JOIN chat_room r ON "
        "r.id = m.room_id JOIN auth_user u ON u.id = m.user_id WHERE r.slug = ANY(%s) ORDER BY 1, 2", [rooms])
    path.write_text(json.dumps([[slug, seq, user, ref, created.isoformat()] for slug, seq, user, ref, created
                                in rows]))


def verdict(clients, database, seqs):
    """Sum the clients' counts against the database's ``seqs`` ({slug: last_seq}); judge."""
    summaries = [client.summary(seqs[client.room]) for client in clients]
    never_joined = [s["name"] for s in summaries if s["missing"] is None]
    joined = [s for s in summaries if s["missing"] is not None]
    lost = sum(len(s["missing"]) for s in joined)
    duplicated = sum(s["duplicates"] for s in joined)
    record = {
        "sockets": len(clients), "issued": sum(s["issued"] for s in summaries),
        "acknowledged": sum(s["acked"] for s in summaries), "unacknowledged": sum(s["pending"] for s in summaries),
        "stored": database["stored"], "stored_unacknowledged": database["stored_unacknowledged"],
        "acknowledged_stored_once": database["acknowledged_stored_once"],
        "rooms_gapless": database["rooms"] - sum(1 for p in database["problems"] if ": last_seq" in p),
        "delivered": sum(s["received"] for s in joined),
        "expected_deliveries": sum(s["upto"] - s["start"] for s in joined),
        "resumed_sockets": sum(1 for s in joined if s["resumes"]), "resumes": sum(s["resumes"] for s in joined),
        "reconnects": sum(s["reconnects"] for s in summaries), "resends": sum(s["resends"] for s in summaries),
        "lost": lost, "duplicated": duplicated, "reordered": sum(s["reordered"] for s in joined),
        "never_joined": never_joined, "workers_seen": len({pid for s in summaries for pid in s["workers"]}),
        "closes": _sum(s["closes"] for s in summaries), "errors": _sum(s["errors"] for s in summaries),
        "anomalies": _sum(s["anomalies"] for s in summaries), "database_problems": database["problems"],
        "examples": [_example(s) for s in joined if s["missing"] or s["duplicates"] or s["reordered"]][:EXAMPLES],
    }
    record["passed"] = (lost == 0 and duplicated == 0 and record["reordered"] == 0 and not never_joined
                        and record["unacknowledged"] == 0 and not database["problems"]
                        and record["acknowledged_stored_once"] == record["acknowledged"])
    return record


def scan_logs(text):
    """Count what the servers' logs say about the soak (errors are expected: the faults cause them)."""
    lines = text.splitlines()
    return {"errors": sum(" ERROR " in line for line in lines),
            "warnings": sum(" WARNING " in line for line in lines),
            "tracebacks": text.count("Traceback (most recent call last)"),
            "hub_blocks": text.count("gevent hub blocked"),
            "payloads_skipped_lines": sum(" skipped " in line for line in lines),
            "reads_from_the_database": sum("from the database" in line and "reading seqs" in line for line in lines),
            "workers_booted": sum("Booting worker" in line for line in lines)}


def _sum(counters):
    total = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


def _example(summary):
    return {key: summary[key] for key in ("name", "room", "port", "start", "last", "upto", "duplicates",
                                          "reordered", "resumes", "workers", "joins", "closes")} | {
        "missing": summary["missing"][:20]}
