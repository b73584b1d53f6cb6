"""Push events to sockets from ordinary Django code, in any process: a view, the admin, a command.

Inside a server worker the event goes through that worker's hub; anywhere else (a management
command, a cron job) through a broker built for the purpose. Either way it reaches every
worker on every host that shares the broker: use ``CHAT_BROKER=postgres`` or ``redis`` for
other processes to be heard (the in-process ``memory`` broker reaches only its own process).
"""
import logging

from chat import brokers, protocol, runtime
from chat.hub import EVERYONE, Hub

logger = logging.getLogger(__name__)

_broker = None


def publish(room, event):
    """Send ``event`` (a dict with a ``type``) to every socket that joined ``room`` (a slug)."""
    hub = runtime.current_hub()
    if hub is not None:
        hub.publish(room, event)
        return
    global _broker
    if _broker is None:
        _broker = brokers.from_settings()
    _broker.publish(room, Hub.payload(event))


def announce(body, room=None):
    """Send a ``notice`` to one room's sockets, or to every socket when ``room`` is None."""
    fields = {"body": body} if room is None else {"body": body, "room": room}
    publish(room or EVERYONE, protocol.event("notice", **fields))
    logger.info("announced to %s: %s", room or "everyone", body)


def message_deleted(message):
    """Tell the room's sockets that ``message`` is gone (they remove it)."""
    publish(message.room.slug, protocol.event("message_deleted", room=message.room.slug,
                                              id=message.id, seq=message.seq))
