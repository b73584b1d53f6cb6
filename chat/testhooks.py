"""Frame types that exist only for the tests (``CHAT_TEST_HOOKS=1``); never registered otherwise.

Each hook takes the socket session and the parsed frame, like the handlers in chat/handlers.py.
"""
import gc
import os
import tempfile
import time
import tracemalloc
from collections import Counter

import greenlet
from django.db import connection
from django.http import HttpRequest

from chat.db import db_work
from chat.errors import BadRequest
from chat.protocol import event


def test_sleep(session, frame):
    """Test hook: hold a database connection in ``pg_sleep`` (proves the ORM is cooperative)."""
    seconds = _seconds(frame)
    with db_work():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [seconds])
    session.send(event("_slept", frame.ref, seconds=seconds))


def test_spin(session, frame):
    """Test hook: burn CPU on the hub on purpose (proves the blocking monitor reports it)."""
    seconds = _seconds(frame)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    session.send(event("_spun", frame.ref, seconds=seconds))


def test_worker(session, frame):
    """Test hook: say which worker process serves this socket."""
    session.send(event("_worker", frame.ref, pid=os.getpid()))


def test_census(session, frame):
    """Test hook: count this worker's live greenlets, open sockets and Django requests.

    Collects garbage and walks every object, so it stalls the hub for a moment on purpose.
    """
    gc.collect()
    objects = gc.get_objects()
    # By type(): isinstance() reads __class__, which evaluates Django's lazy objects.
    alive = sum(1 for o in objects if issubclass(type(o), greenlet.greenlet) and not o.dead)
    requests = sum(1 for o in objects if issubclass(type(o), HttpRequest))
    session.send(event("_census", frame.ref, pid=os.getpid(), greenlets=alive,
                       sessions=len(session.hub.sessions), requests=requests))


def test_memory(session, frame):
    """Test hook: tracemalloc and object counts for bench/socket_cost.py (stalls the hub).

    ``action``: ``count`` (after a collection: greenlets by function, objects by type),
    ``start`` (tracing, ``frames`` deep), ``snapshot`` (dumped to a file of the worker's temp
    directory, its path returned) or ``stop``.
    """
    action = frame.fields.get("action")
    if action not in ("count", "start", "snapshot", "stop"):
        raise BadRequest("action must be count, start, snapshot or stop", frame.ref)
    if action == "stop":
        tracemalloc.stop()
    gc.collect()
    objects = gc.get_objects()
    # By type(), at C speed: isinstance() reads __class__, which evaluates Django's lazy objects.
    by_type = Counter(map(type, objects))
    kinds = {kind for kind in by_type if issubclass(kind, greenlet.greenlet)}
    runs = Counter(_run_name(o) for o in objects if type(o) in kinds and not o.dead)
    del objects  # a list of every object: not in the snapshot
    types = Counter()
    for kind, count in by_type.items():
        types[f"{kind.__module__}.{kind.__qualname__}"] += count
    fields = {"pid": os.getpid(), "sessions": len(session.hub.sessions),
              "greenlets": sum(runs.values()), "greenlet_runs": dict(runs),
              "types": dict(types.most_common(300))}
    if action == "start":  # after the census: its own allocations are not traced
        tracemalloc.start(frame.integer("frames", 1, minimum=1, maximum=100))
    elif action == "snapshot":
        handle, path = tempfile.mkstemp(prefix="chat-tracemalloc-", suffix=".pickle")
        os.close(handle)
        tracemalloc.take_snapshot().dump(path)
        fields.update(path=path, traced=tracemalloc.get_traced_memory()[0])
    session.send(event("_memory", frame.ref, **fields))


def _run_name(green):
    run = getattr(green, "_run", None) or getattr(green, "run", None)
    return getattr(run, "__qualname__", type(green).__qualname__)


def _seconds(frame):
    seconds = frame.fields.get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 10:
        raise BadRequest("seconds must be a number from 0 to 10", frame.ref)
    return seconds


def test_fail_publishes(session, frame):
    """Test hook: make this worker's next ``count`` broker publishes raise (a lost publish)."""
    count = frame.fields.get("count")
    if type(count) is not int or not 0 <= count <= 1000:
        raise BadRequest("count must be an integer from 0 to 1000", frame.ref)
    broker = session.hub.broker
    if not hasattr(broker, "publishes_to_fail"):
        send = broker.publish

        def failing_publish(topic, payload):
            if broker.publishes_to_fail > 0:
                broker.publishes_to_fail -= 1
                raise OSError("publish failed on purpose (_fail_publishes)")
            send(topic, payload)

        broker.publish = failing_publish
    broker.publishes_to_fail = count
    session.send(event("_failing_publishes", frame.ref, pid=os.getpid(), count=count))


HOOKS = {"_sleep": test_sleep, "_spin": test_spin, "_worker": test_worker, "_census": test_census,
         "_fail_publishes": test_fail_publishes, "_memory": test_memory}
