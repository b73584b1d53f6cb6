"""Client frame types and the functions that answer them (PROTOCOL.md, Client to server).

Each command takes the socket session and the parsed frame, and replies through
``session.send``. Failures are raised as ``ChatError``; the session turns them into events.
"""
import time

from django.conf import settings
from django.db import connection

from chat import protocol
from chat.db import db_work
from chat.errors import BadRequest


def ping(session, frame):
    """Answer ``ping`` with ``pong``."""
    session.send(protocol.event("pong", frame.ref))


def whoami(session, frame):
    """Answer with the username the socket is signed in as (an extension of PROTOCOL.md)."""
    session.send(protocol.event("whoami", frame.ref, user=session.user.get_username()))


def test_sleep(session, frame):
    """Test hook: hold a database connection in ``pg_sleep`` (proves the ORM is cooperative)."""
    seconds = _seconds(frame)
    with db_work():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [seconds])
    session.send(protocol.event("_slept", frame.ref, seconds=seconds))


def test_spin(session, frame):
    """Test hook: burn CPU on the hub on purpose (proves the blocking monitor reports it)."""
    seconds = _seconds(frame)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    session.send(protocol.event("_spun", frame.ref, seconds=seconds))


def _seconds(frame):
    seconds = frame.fields.get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 10:
        raise BadRequest("seconds must be a number from 0 to 10")
    return seconds


COMMANDS = {"ping": ping, "whoami": whoami}
TEST_COMMANDS = {"_sleep": test_sleep, "_spin": test_spin}


def registry():
    """Return the frame types this server answers, with the test hooks when enabled."""
    if settings.CHAT_TEST_HOOKS:
        return {**COMMANDS, **TEST_COMMANDS}
    return COMMANDS
