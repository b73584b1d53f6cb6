"""Time full-text search (chat/search.py) on 1,000,000 messages; write its section of
docs/benchmarks.md ("Search (issue 16)").

    .venv/bin/python bench/search.py [--messages 1000000] [--repeats 20] [--no-write]

A fresh database in the benchmarks' PostgreSQL (bench/harness.py ``Database``, pinned to CPU 0;
this process runs on CPU 1), migrated, then filled by COPY: 2,000 users, 1,000 rooms (every 50th
public, the rest private with 5 to 40 members, busier rooms first by a Zipf-like weight), and
the messages. Their text is real English prose: runs of 2 to 8 consecutive words from the
docstrings of Python's standard library and Django (whatever this venv holds), one to three
runs a message, so words have natural frequencies and phrases occur. The GIN index is dropped
for the load and built again after it (timed), then ``VACUUM ANALYZE``.

Each query runs through ``chat.search.search``, the very function of the page (with its
``ts_headline`` snippets), once to warm up and then ``--repeats`` times: p50 and max. The
statement timeout is raised to 60 s here so that slow queries are measured, not cut at
``CHAT_SEARCH_TIMEOUT``; the table says which exceed the default 2 s.
"""
import argparse
import ast
import datetime
import io
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import LOAD_CPU, Database  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Search (issue 16)"
DB_NAME = "bench_search"
USERS, ROOMS, PUBLIC_EVERY = 2000, 1000, 50
WIDE_ROOMS, NARROW_ROOMS = 200, 3
CHUNK = 100_000
WORD = re.compile(r"[A-Za-z][a-z]+(?:'[a-z]+)?")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print, don't touch docs/benchmarks.md")
    options = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    database = Database()
    os.environ.update(DATABASE_URL=database.fresh(DB_NAME), DJANGO_SETTINGS_MODULE="project.settings",
                      CHAT_SEARCH_TIMEOUT="60")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    corpus = load_corpus()
    print(f"corpus: {len(corpus):,} words, {len(set(corpus)):,} distinct", flush=True)
    started = time.perf_counter()
    counts, bigrams = fill(options.messages, corpus)
    load_s = time.perf_counter() - started
    index_s = rebuild_index()
    queries = pick_queries(counts, bigrams, options.messages)
    rows = [measure(label, user, text, options.repeats) for label, user, text in queries]
    ranked = measure_ranked(queries, max(3, options.repeats // 4))
    section = render(options, rows, ranked, load_s, index_s, sizes(), queries)
    print(section)
    if not options.no_write:
        write_section(section)
        print(f"wrote {DOC.relative_to(ROOT)}")


def load_corpus():
    """Return the words of the docstrings of the stdlib and Django, in order."""
    import sysconfig

    import django

    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(django.__file__).parent]
    words = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "test" in path.name or "tests" in path.parts or "idlelib" in path.parts:
                continue
            try:
                tree = ast.parse(path.read_text(errors="replace"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    words += WORD.findall(ast.get_docstring(node) or "")
    return words


def fill(total, corpus):
    """Insert users, rooms, members and ``total`` messages; return word and bigram counts."""
    from django.db import connection

    rng = random.Random(16)
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX chat_message_body_search")
        cursor.execute("""INSERT INTO auth_user (password, is_superuser, username, first_name,
                              last_name, email, is_staff, is_active, date_joined)
                          SELECT '!', false, 'user' || n, '', '', '', false, true, now()
                          FROM generate_series(1, %s) n""", [USERS])
        cursor.execute("""INSERT INTO chat_room (slug, name, private, last_seq, created)
                          SELECT 'room-' || n, 'Room ' || n, n %% %s <> 0, 0, now()
                          FROM generate_series(1, %s) n""", [PUBLIC_EVERY, ROOMS])
        cursor.execute("SELECT min(id) FROM auth_user WHERE username LIKE 'user%%'")
        first_user = cursor.fetchone()[0]
        cursor.execute("SELECT min(id) FROM chat_room WHERE slug LIKE 'room-%%'")  # not the lobby
        first_room = cursor.fetchone()[0]
        members = _members(rng, first_user, first_room)
        _copy(cursor, "chat_room_members (room_id, user_id)", members)
        counts, bigrams = Counter(), Counter()
        weights = [1 / (rank + 5) for rank in range(ROOMS)]
        rng.shuffle(weights)
        seqs = [0] * ROOMS
        start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        step = datetime.timedelta(days=330) / total
        for offset in range(0, total, CHUNK):
            rows = []
            rooms = rng.choices(range(ROOMS), weights, k=min(CHUNK, total - offset))
            for n, room in enumerate(rooms, offset):
                seqs[room] += 1
                body = _body(rng, corpus, counts, bigrams)
                rows.append((first_room + room, seqs[room], first_user + rng.randrange(USERS),
                             body, (start + n * step).isoformat(), "f"))
            _copy(cursor, "chat_message (room_id, seq, user_id, body, created, deleted)", rows)
            print(f"  {offset + len(rows):,} messages", flush=True)
        cursor.execute("UPDATE chat_room r SET last_seq = m.seq FROM "
                       "(SELECT room_id, max(seq) seq FROM chat_message GROUP BY room_id) m "
                       "WHERE m.room_id = r.id")
    return counts, bigrams


def _members(rng, first_user, first_room):
    """Private rooms get 5 to 40 members; user1 is in WIDE_ROOMS rooms, user2 in NARROW_ROOMS."""
    private = [room for room in range(ROOMS) if (room + 1) % PUBLIC_EVERY]
    pairs = set()
    for room in private:
        for user in rng.sample(range(2, USERS), rng.randint(5, 40)):
            pairs.add((first_room + room, first_user + user))
    pairs.update((first_room + room, first_user) for room in rng.sample(private, WIDE_ROOMS))
    pairs.update((first_room + room, first_user + 1) for room in rng.sample(private, NARROW_ROOMS))
    return sorted(pairs)


def _body(rng, corpus, counts, bigrams):
    parts = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        length = rng.randint(2, 8)
        start = rng.randrange(len(corpus) - length)
        run = corpus[start:start + length]
        parts.append(" ".join(run))
        lowered = [word.lower() for word in run]
        bigrams.update(zip(lowered, lowered[1:]))
        counts.update(set(lowered))
    return ". ".join(parts)


def _copy(cursor, target, rows):
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(str(value).replace("\\", "\\\\").replace("\t", " ") for value in row))
        buffer.write("\n")
    buffer.seek(0)
    cursor.copy_expert(f"COPY {target} FROM STDIN", buffer)


def rebuild_index():
    """Build the search index again with migration 0009's statement; return its seconds."""
    from django.db import connection

    sql = _index_sql()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        started = time.perf_counter()
        cursor.execute(sql)
        elapsed = time.perf_counter() - started
        print(f"index built in {elapsed:.1f} s", flush=True)
        cursor.execute("VACUUM ANALYZE")
    return elapsed


def _index_sql():
    from django.db import connection

    from chat.models import Message

    index = next(i for i in Message._meta.indexes if i.name == "chat_message_body_search")
    with connection.schema_editor(atomic=False, collect_sql=True) as editor:
        return str(index.create_sql(Message, editor, concurrently=True))


def pick_queries(counts, bigrams, total):
    """Return (label, username, query) for the typical searches, words chosen from the data."""
    stop = _stop_words({word for word, _ in counts.most_common(400)}
                       | {word for pair, _ in bigrams.most_common(400) for word in pair})
    common = next(word for word, _ in counts.most_common() if word not in stop and len(word) > 3)
    phrase = next(pair for pair, _ in bigrams.most_common()
                  if not set(pair) & stop and min(map(len, pair)) > 3)
    scale = total / 1_000_000  # the counts below are for a million messages
    by_count = sorted(counts.items(), key=lambda item: (item[1], item[0]))
    rare = next(word for word, count in by_count
                if count >= max(2, 20 * scale) and len(word) >= 7 and "'" not in word)
    middle = [word for word, count in by_count if 1000 * scale <= count <= 3000 * scale
              and len(word) >= 5 and word not in stop and "'" not in word]
    either, other = middle[len(middle) // 3], middle[2 * len(middle) // 3]
    return [
        ("common word", "user1", common),
        ("common word, page 5", "user1", common),
        ("rare word", "user1", rare),
        ("phrase", "user1", f'"{phrase[0]} {phrase[1]}"'),
        ("OR", "user1", f"{either} or {other}"),
        ("exclusion", "user1", f"{common} -{either}"),
        ("common word, few rooms", "user2", common),
        ("rare word, few rooms", "user2", rare),
    ]


def _stop_words(words):
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT w FROM unnest(%s::text[]) w "
                       "WHERE numnode(plainto_tsquery(%s::regconfig, w)) = 0",
                       [sorted(words), settings.CHAT_SEARCH_CONFIG])
        return {word for (word,) in cursor.fetchall()}


def measure(label, username, text, repeats):
    """Time ``search.search`` for one query; return a row of the table."""
    from django.contrib.auth import get_user_model

    from chat import search

    user = get_user_model().objects.get(username=username)
    page = 5 if "page 5" in label else 1
    results = search.search(user, text, page)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        search.search(user, text, page)
        times.append((time.perf_counter() - started) * 1000)
    plan = search.explain(user, text, page, analyze=True)
    row = {"label": label, "user": username, "query": text, "matches": _matches(user, text),
           "shown": len(results.hits), "p50": statistics.median(times), "max": max(times),
           "plan": plan, "scan": _scan(plan)}
    print(f"{label}: {row['matches']:,} matches, p50 {row['p50']:.1f} ms, max {row['max']:.1f} ms, "
          f"{row['scan']}", flush=True)
    return row


def _readable(user_param):
    return ("m.room_id IN (SELECT id FROM chat_room WHERE NOT private UNION ALL "
            f"SELECT room_id FROM chat_room_members WHERE user_id = {user_param})")


def _matches(user, text):
    from django.conf import settings
    from django.db import connection

    from chat.search import vector_sql

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM chat_message m WHERE {vector_sql('m.body')} @@ "
                       "websearch_to_tsquery(%(config)s::regconfig, %(text)s) AND NOT m.deleted "
                       f"AND {_readable('%(user)s')}",
                       {"config": settings.CHAT_SEARCH_CONFIG, "text": text, "user": user.pk})
        return cursor.fetchone()[0]


def _scan(plan):
    """Say how the plan finds the matches in chat_message."""
    text = "\n".join(plan)
    if "Bitmap Index Scan on chat_message_body_search" in text:
        return "GIN index (bitmap), then newest first"
    if "Index Scan Backward using chat_message_pkey on chat_message m_1" in text:
        return "primary key backwards, each row's vector computed"
    return "whole table" if "Seq Scan on chat_message" in text else "?"


def measure_ranked(queries, repeats):
    """Time the page's first 21 ids ordered by ts_rank instead of newest first (common, rare)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from chat.search import vector_sql

    rows = []
    for label, username, text in queries:
        if label not in ("common word", "rare word"):
            continue
        user = get_user_model().objects.get(username=username)
        params = {"config": settings.CHAT_SEARCH_CONFIG, "text": text, "user": user.pk}
        times = {}
        for order in ("m.id DESC", f"ts_rank({vector_sql('m.body')}, q) DESC, m.id DESC"):
            sql = (f"SELECT m.id FROM chat_message m, websearch_to_tsquery(%(config)s::regconfig, "
                   f"%(text)s) q WHERE {vector_sql('m.body')} @@ q AND NOT m.deleted AND "
                   f"{_readable('%(user)s')} ORDER BY {order} LIMIT 21")
            spent = []
            with connection.cursor() as cursor:
                cursor.execute(sql, params)  # warm-up
                for _ in range(repeats):
                    started = time.perf_counter()
                    cursor.execute(sql, params)
                    cursor.fetchall()
                    spent.append((time.perf_counter() - started) * 1000)
            times[order.split(",")[0].split("(")[0]] = statistics.median(spent)
        rows.append((label, text, times["m.id DESC"], times["ts_rank"]))
        print(f"ranked {label}: newest first {rows[-1][2]:.1f} ms, by rank {rows[-1][3]:.1f} ms", flush=True)
    return rows


def sizes():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_relation_size('chat_message')), "
                       "pg_size_pretty(pg_relation_size('chat_message_body_search')), version()")
        return cursor.fetchone()


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    cpus = subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip()
    return f"{cpus} CPUs ({cpu}), {memory / 2**20:.0f} GiB RAM, Linux {platform.release()}"


def render(options, rows, ranked, load_s, index_s, size, queries):
    """The section of docs/benchmarks.md, as Markdown."""
    import django

    table_size, index_size, pg_version = size
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M UTC")
    command = "python bench/search.py" + (f" --messages {options.messages}" if options.messages != 1_000_000 else "") \
        + (f" --repeats {options.repeats}" if options.repeats != 20 else "")
    lines = [SECTION, "",
             f"Measured `.venv/bin/python {command.split(' ', 1)[1]}`, {when}, on {machine()}; Python "
             f"{platform.python_version()}, Django {django.get_version()}, {pg_version.split(' on ')[0]}. "
             "The machine was shared with other test runs: read the ratios and the plans more than the "
             "absolute times.", "",
             f"{options.messages:,} messages ({table_size} of table) in {ROOMS:,} rooms "
             f"({ROOMS // PUBLIC_EVERY} public, and the empty lobby), {USERS:,} users; loaded by COPY in {load_s:.0f} s. "
             f"The GIN index (migration 0009's `CREATE INDEX CONCURRENTLY`) took {index_s:.0f} s to "
             f"build and holds {index_size}. `user1` may read the public rooms and {WIDE_ROOMS} "
             f"private ones, `user2` the public rooms and {NARROW_ROOMS}.", "",
             f"`chat.search.search` (the page's query, 21 rows with their `ts_headline` snippets), "
             f"one warm-up then {options.repeats} runs each:", "",
             "| search | user | query | matches | p50 (ms) | max (ms) | read by |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for row in rows:
        lines.append(f"| {row['label']} | {row['user']} | `{row['query']}` | {row['matches']:,} | "
                     f"{row['p50']:.1f} | {row['max']:.1f} | {row['scan']} |")
    over = [row["label"] for row in rows if row["max"] > 2000]
    lines += ["", ("Every search stayed under the default `CHAT_SEARCH_TIMEOUT` of 2 s." if not over else
                   f"Over the default `CHAT_SEARCH_TIMEOUT` of 2 s (the page would say it took too long): "
                   f"{', '.join(over)}."), ""]
    lines += ["How to read it. The planner chooses between two plans. With the GIN index it reads "
              "every match (the index gives the rows, the heap says whether each is deleted and in a "
              "readable room), then keeps the newest 21: its cost grows with the matches of the whole "
              "table, and a phrase costs more, as GIN keeps no word positions and each candidate's "
              "vector is computed to check them. Or it walks the primary key newest first and "
              "computes each row's vector until 21 match: cheap while matches are dense among the "
              "rows the user may read (a common word, the first page), dear when they are sparse (a "
              "user of few rooms, later pages). The statement timeout bounds both.", ""]
    lines += ["Newest first against ordered by `ts_rank` (the first 21 ids only, no snippets, p50 of "
              f"{max(3, options.repeats // 4)} runs): ranking must compute the vector of every match "
              "(the index stores none), newest first may stop at the 21st.", "",
              "| search | query | newest first (ms) | by rank (ms) |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {label} | `{text}` | {newest:.1f} | {rank:.1f} |" for label, text, newest, rank in ranked]
    for row in rows:
        if row["label"] in ("common word", "rare word, few rooms"):
            lines += ["", f"EXPLAIN (ANALYZE, BUFFERS), {row['label']} (`{row['query']}`, {row['user']}):",
                      "", "```", *_hits_part(row["plan"]), "```"]
    return "\n".join(lines) + "\n"


def _hits_part(plan):
    """The plan of the page's ids (the LIMIT under the joins), dedented, without buffer lines."""
    start = next(n for n, line in enumerate(plan) if line.strip().startswith("->  Limit"))
    indent = len(plan[start]) - len(plan[start].lstrip()) + 4
    part = [plan[start].strip()[4:]]
    for line in plan[start + 1:]:
        if len(line) - len(line.lstrip()) <= indent - 4:
            break
        if not line.strip().startswith("Buffers:"):
            part.append(line[indent:])
    return part + [line for line in plan if line.startswith("Execution Time")]


def write_section(section):
    """Put ``section`` in place of the old one in docs/benchmarks.md, or at its end."""
    text = DOC.read_text()
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    DOC.write_text(text)


if __name__ == "__main__":
    main()
