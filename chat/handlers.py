"""Client frame types and the functions that answer them (PROTOCOL.md, Client to server).

Each command takes the socket session and the parsed frame and replies through
``session.send``. Failures are raised as ``ChatError``; the session turns them into events.
"""
from django.conf import settings

from chat import edits, mentions, metrics, protocol, reads, rooms, snapshot
from chat.errors import BadRequest, Forbidden, NotJoined, RateLimited
from chat.hub import USER_PREFIX
from chat.protocol import event
from chat.wsmends import encode_frame


def join(session, frame):
    """Join a room: reply ``joined`` with the newest messages (or those after ``since``)."""
    slug = frame.slug()
    since = frame.integer("since")
    changes_since = frame.integer("changes_since")
    _take_db_token(session, frame)
    if slug not in session.rooms and len(session.rooms) >= settings.CHAT_ROOMS_PER_SOCKET:
        raise BadRequest(f"a socket may join at most {settings.CHAT_ROOMS_PER_SOCKET} rooms", frame.ref)
    session.subscribe(slug)  # first, so that no message falls between read and live
    try:
        room = session.hub.rooms[slug]
        room_id, seq, bodies, more, changed = snapshot.take(room, session.user, slug, since,
                                                            changes_since)
        names, extra = _presence(session.hub.enter(session, slug))
    except BaseException:
        session.unsubscribe(slug)
        raise
    session.send_frame(encode_frame(protocol.joined_body(
        frame.ref, slug, seq, bodies, more, names, **extra, **changed)))
    session.ready(slug, room_id, seq)
    metrics.JOINS.inc()


def _presence(roster):
    """Return ``joined.presence`` and, for a room over the cap, the fields that say so."""
    names, more = roster.page(limit=settings.CHAT_PRESENCE_LIST_MAX)
    if not more:
        return names, {}
    return names, {"presence_more": True, "presence_count": len(roster)}


def who(session, frame):
    """Reply with a page of who is in a joined room: the usernames sorted ``after`` one."""
    slug = _joined(session, frame)
    after = frame.fields.get("after")
    if after is not None and not (isinstance(after, str) and 1 <= len(after) <= 150):
        raise BadRequest("after must be a username (text of 1 to 150 characters)", frame.ref)
    cap = settings.CHAT_PRESENCE_LIST_MAX
    limit = frame.integer("limit", cap, minimum=1, maximum=cap)
    roster = session.hub.rooms[slug].roster
    users, more = roster.page(after, limit)
    session.send(event("who", frame.ref, room=slug, users=users, more=more, count=len(roster)))


def leave(session, frame):
    """Leave a joined room: reply ``left``."""
    slug = _joined(session, frame)
    _take_db_token(session, frame)
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
    _still_admitted(session, slug, frame)
    message, created = rooms.post(session.user, session.rooms[slug].room_id, body, frame.ref)
    message_event = protocol.message_event(message, slug, session.username)
    if created:
        session.hub.publish(slug, message_event, seq=message.seq)
        mentions.after_send(session.hub, message, slug, session.user)
    else:
        session.send(message_event)


def typing(session, frame):
    """Tell the room's other users that this user is typing."""
    slug = _joined(session, frame)
    if not session.typing.take():
        metrics.RATE_LIMITED.inc()
        raise RateLimited(f"slow down: typing at most {session.budgets.typing_rate:g} a second",
                          frame.ref)
    _take_token(session, frame)
    session.hub.publish(slug, event("typing", room=slug, user=session.username),
                        skip_user=session.username)


def history(session, frame):
    """Reply with a page of older messages: ``before`` a seq, at most ``limit``."""
    slug = _joined(session, frame)
    _take_db_token(session, frame)
    _still_admitted(session, slug, frame)
    before = frame.integer("before")
    limit = frame.integer("limit", settings.CHAT_HISTORY_DEFAULT, minimum=1,
                          maximum=settings.CHAT_HISTORY_MAX)
    room_id = session.rooms[slug].room_id
    messages, more = rooms.history(room_id, slug, before, limit)
    # The page covers its first message's seq (or, without more, every seq) up to ``before``.
    lo = messages[0]["seq"] - 1 if more and messages else 0
    edited, deleted = edits.marks(room_id, lo, None if before is None else before - 1)
    fields = {"deleted": deleted} if deleted else {}
    session.send(event("history", frame.ref, room=slug, messages=edits.mark(messages, edited),
                       more=more, **fields))


def edit(session, frame):
    """Replace the body of an own message (staff: any), within ``CHAT_EDIT_WINDOW``; tell the room."""
    slug, seq = _joined(session, frame), _seq(frame)
    body = frame.body()
    _take_token(session, frame)
    _still_admitted(session, slug, frame)
    changed, new = edits.edit(session.user, session.rooms[slug].room_id, slug, seq, body)
    edited_event = protocol.message_edited(slug, changed.seq, changed.id, changed.body,
                                           changed.edited, changed.change, frame.ref)
    if new:
        session.hub.publish(slug, edited_event)
    else:  # a resend: the editor hears it again, nobody else
        session.send(edited_event)


def delete(session, frame):
    """Delete an own message (staff: any), within ``CHAT_EDIT_WINDOW``; tell the room."""
    slug, seq = _joined(session, frame), _seq(frame)
    _take_token(session, frame)
    _still_admitted(session, slug, frame)
    changed = edits.delete(session.user, session.rooms[slug].room_id, slug, seq)
    session.hub.publish(slug, protocol.message_deleted(slug, changed.id, changed.seq,
                                                       changed.change, frame.ref))


def read(session, frame):
    """Move the user's read marker in a joined room to ``seq``; tell all their sessions."""
    slug, seq = _joined(session, frame), _seq(frame)
    _take_db_token(session, frame)
    state = reads.mark(session.user, session.rooms[slug].room_id, seq)
    if state.moved:  # every tab and device of the user, this one included
        session.hub.publish(f"{USER_PREFIX}{session.user_id}", reads.unread_event(slug, state))
    else:  # a lower seq changes nothing: this socket alone hears where the marker is
        session.send(reads.unread_event(slug, state, frame.ref))


def _seq(frame):
    seq = frame.integer("seq", minimum=1)
    if seq is None:
        raise BadRequest("seq must be a whole number from 1 or more", frame.ref)
    return seq


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


def _take_db_token(session, frame):
    if not session.db_frames.take():
        metrics.RATE_LIMITED.inc()
        raise RateLimited(f"slow down: join, leave, history and read at most "
                          f"{session.budgets.db_frame_rate:g} a second", frame.ref)


def _still_admitted(session, slug, frame):
    """Re-check, at most every ``CHAT_MEMBERSHIP_RECHECK`` s, that the user may read ``slug``.

    Removal from a private room is pushed (chat/authority.py); this catches the changes that
    fire no signal, before a message is stored or a page of history is read.
    """
    membership = session.rooms[slug]
    if session.clock() - membership.checked_at < settings.CHAT_MEMBERSHIP_RECHECK:
        return
    if not rooms.admits(session.user, membership.room_id):
        session.evict(slug, "you are no longer a member of this private room")
        raise Forbidden(f"{slug!r} is a private room; ask a member to add you", frame.ref)
    membership.checked_at = session.clock()


def _take_token(session, frame):
    if not session.limiter.allow(session.user.pk):
        metrics.RATE_LIMITED.inc()
        raise RateLimited(f"slow down: at most {settings.CHAT_RATE_LIMIT:g} messages a second",
                          frame.ref)


COMMANDS = {"join": join, "leave": leave, "send": send, "typing": typing, "history": history,
            "ping": ping, "whoami": whoami, "who": who, "edit": edit, "delete": delete, "read": read}


def registry():
    """Return the frame types this server answers, with the test hooks when enabled."""
    if settings.CHAT_TEST_HOOKS:
        from chat import testhooks  # only imported when the setting is on

        return {**COMMANDS, **testhooks.HOOKS}
    return COMMANDS
