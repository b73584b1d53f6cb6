"""Frame types that exist only for the tests (``CHAT_TEST_HOOKS=1``); never registered otherwise.

Each hook takes the socket session and the parsed frame, like the handlers in chat/handlers.py.
"""
import gc
import os
import time

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
    alive = sum(1 for o in objects if isinstance(o, greenlet.greenlet) and not o.dead)
    requests = sum(1 for o in objects if isinstance(o, HttpRequest))
    session.send(event("_census", frame.ref, pid=os.getpid(), greenlets=alive,
                       sessions=len(session.hub.sessions), requests=requests))


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
         "_fail_publishes": test_fail_publishes}
