"""Push events to sockets from ordinary Django code, in any process: a view, the admin, a command.

Inside a server worker the event goes through that worker's hub; anywhere else (a management
command, a cron job) through a broker built for the purpose. Either way it reaches every
worker on every host that shares the broker: use ``CHAT_BROKER=postgres`` or ``redis`` for
other processes to be heard (the in-process ``memory`` broker reaches only its own process).
"""
import logging

from chat import brokers, protocol, runtime
from chat.hub import CONTROL, EVERYONE, USER_PREFIX, Hub

logger = logging.getLogger(__name__)

_broker = None


def publish(room, event, seq=None):
    """Send ``event`` (a dict with a ``type``) to every socket that joined ``room`` (a slug).

    ``seq``: a stored message's, so that the rooms' cursors order it (chat/cursor.py).
    """
    hub = runtime.current_hub()
    if hub is not None:
        hub.publish(room, event, seq=seq)
        return
    global _broker
    if _broker is None:
        _broker = brokers.from_settings()  # never started: it only publishes
    _broker.publish(room, Hub.payload(event, seq))


def announce(body, room=None):
    """Send a ``notice`` to one room's sockets, or to every socket when ``room`` is None."""
    fields = {"body": body} if room is None else {"body": body, "room": room}
    publish(room or EVERYONE, protocol.event("notice", **fields))
    logger.info("announced to %s: %s characters", room or "everyone", len(body))  # up to 1 MiB


def message_deleted(message):
    """Tell the room's sockets that ``message`` is gone (they remove it)."""
    publish(message.room.slug, protocol.message_deleted(message.room.slug, message.id,
                                                         message.seq, message.change))


def to_user(user, event):
    """Send ``event`` to every open session of ``user`` (a user or a pk), whatever its rooms:
    the user's own channel (unread counts, mentions), on every worker."""
    publish(f"{USER_PREFIX}{getattr(user, 'pk', user)}", event)


def control(event):
    """Send a control event (chat/authority.py) to the authority of every worker."""
    publish(CONTROL, event)


def disconnect_event(user=None, session_key=None, reason="disconnected by the site"):
    """Build the control event that closes a session's or a user's sockets with 4401."""
    if (user is None) == (session_key is None):
        raise TypeError("disconnect needs exactly one of user= or session_key=")
    user_id = getattr(user, "pk", user)
    return {"type": "disconnect", "user": user_id, "session": session_key, "reason": reason}


def disconnect(user=None, session_key=None, reason="disconnected by the site"):
    """Close with 4401, on every worker, the sockets of ``user`` (a user or a pk) or of one session.

    For plain Django code: a moderation view, a signal receiver, a management command. The
    clients see ``reason`` as the close reason and do not reconnect until signed in again.
    """
    control(disconnect_event(user=user, session_key=session_key, reason=reason))
    logger.info("disconnecting %s", f"user {getattr(user, 'pk', user)}" if user is not None
                else "a session")
