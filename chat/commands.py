"""Client frame types and the functions that answer them (PROTOCOL.md, Client to server).

Each command takes the socket session and the parsed frame and replies through
``session.send``. Failures are raised as ``ChatError``; the session turns them into events.
"""
import gc
import os
import time

import greenlet

from django.conf import settings
from django.db import connection

from chat import metrics, protocol, rooms
from chat.db import db_work
from chat.errors import BadRequest, NotJoined, RateLimited
from chat.protocol import event


def join(session, frame):
    """Join a room: reply ``joined`` with the newest messages (or those after ``since``)."""
    slug = frame.slug()
    since = frame.integer("since")
    if slug not in session.rooms and len(session.rooms) >= settings.CHAT_ROOMS_PER_SOCKET:
        raise BadRequest(f"a socket may join at most {settings.CHAT_ROOMS_PER_SOCKET} rooms", frame.ref)
    channel = session.subscribe(slug)  # first, so that no message falls between read and live
    try:
        snapshot = rooms.open_room(session.user, slug, since)
        messages, seq = snapshot.messages, snapshot.seq
        cursor = channel.start_at(snapshot.room_id, seq)
        if cursor > seq:
            # This worker already handed on seqs the snapshot did not see: send them too.
            caught_up = rooms.messages_between(snapshot.room_id, slug, seq, cursor)
            messages = messages + [e for _, e in caught_up if e and e["seq"] > (since or 0)]
            seq = cursor
        presence = session.hub.enter(session, slug)
    except BaseException:
        session.unsubscribe(slug)
        raise
    session.send(event("joined", frame.ref, room=slug, seq=seq, messages=messages,
                       more=snapshot.more, presence=presence))
    session.ready(slug, snapshot.room_id, seq)
    metrics.JOINS.inc()


def leave(session, frame):
    """Leave a joined room: reply ``left``."""
    slug = _joined(session, frame)
    session.unsubscribe(slug)
    session.send(event("left", frame.ref, room=slug))


def send(session, frame):
    """Store a message (once per ref) and broadcast it; a resend gets the original back."""
    metrics.MESSAGES_RECEIVED.inc()
    slug = _joined(session, frame)
    body = frame.body()
    if frame.ref is None:
        raise BadRequest("send needs a ref, so that a resend is never stored twice")
    _take_token(session, frame)
    message, created = rooms.post(session.user, session.rooms[slug].room_id, body, frame.ref)
    message_event = protocol.message_event(message, slug, session.username)
    if created:
        session.hub.publish(slug, message_event, seq=message.seq)
    else:
        session.send(message_event)


def typing(session, frame):
    """Tell the room's other users that this user is typing."""
    slug = _joined(session, frame)
    _take_token(session, frame)
    session.hub.publish(slug, event("typing", room=slug, user=session.username),
                        skip_user=session.username)


def history(session, frame):
    """Reply with a page of older messages: ``before`` a seq, at most ``limit``."""
    slug = _joined(session, frame)
    before = frame.integer("before")
    limit = frame.integer("limit", settings.CHAT_HISTORY_DEFAULT, minimum=1,
                          maximum=settings.CHAT_HISTORY_MAX)
    messages, more = rooms.history(session.rooms[slug].room_id, slug, before, limit)
    session.send(event("history", frame.ref, room=slug, messages=messages, more=more))


def ping(session, frame):
    """Answer ``ping`` with ``pong``."""
    session.send(event("pong", frame.ref))


def whoami(session, frame):
    """Answer with the username the socket is signed in as (an extension of PROTOCOL.md)."""
    session.send(event("whoami", frame.ref, user=session.username))


def _joined(session, frame):
    slug = frame.slug()
    membership = session.rooms.get(slug)
    if membership is None or membership.room_id is None:
        raise NotJoined(f"join {slug!r} first", frame.ref)
    return slug


def _take_token(session, frame):
    if not session.limiter.allow(session.user.pk):
        metrics.RATE_LIMITED.inc()
        raise RateLimited(f"slow down: at most {settings.CHAT_RATE_LIMIT:g} messages a second",
                          frame.ref)


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
    """Test hook: count this worker's live greenlets and open sockets (leak tests).

    Collects garbage and walks every object, so it stalls the hub for a moment on purpose.
    """
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)
    session.send(event("_census", frame.ref, pid=os.getpid(), greenlets=alive,
                       sessions=len(session.hub.sessions)))


def _seconds(frame):
    seconds = frame.fields.get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 10:
        raise BadRequest("seconds must be a number from 0 to 10", frame.ref)
    return seconds


COMMANDS = {"join": join, "leave": leave, "send": send, "typing": typing, "history": history,
            "ping": ping, "whoami": whoami}
TEST_COMMANDS = {"_sleep": test_sleep, "_spin": test_spin, "_worker": test_worker,
                 "_census": test_census}


def registry():
    """Return the frame types this server answers, with the test hooks when enabled."""
    if settings.CHAT_TEST_HOOKS:
        return {**COMMANDS, **TEST_COMMANDS}
    return COMMANDS
