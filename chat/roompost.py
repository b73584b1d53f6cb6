"""A message posted with the room page's form (no JavaScript): checked as ``send`` checks it,
stored once per ref, published as a socket's ``send`` publishes it, rate-limited alike.

The view (chat/views.py, ``room_post``) turns the exceptions into pages: ``BadRequest`` 400,
``RateLimited`` 429, ``ServerBusy`` 503.
"""
import hashlib
import json
import logging

from django.conf import settings

from chat import mentions, metrics, protocol, publish, rooms, runtime
from chat.errors import BadRequest, RateLimited

logger = logging.getLogger(__name__)

NO_REF = "The form has no ref: reload the page and send the message again."


def checked(body, ref):
    """Return the body as ``send`` would store it, or raise ``BadRequest`` with why not.

    The frame is built and parsed as the socket's would be, so that the ref and body rules
    (docs/protocol.md) are those of ``send``, not a copy of them.
    """
    if not ref:
        raise BadRequest(NO_REF)
    # Browsers submit a textarea's new lines as CRLF; the JavaScript client sends LF.
    body = body.replace("\r\n", "\n")
    frame = protocol.parse(json.dumps({"type": "send", "ref": ref, "body": body}))
    return frame.body()


def post(user, room, body, ref):
    """Store ``body`` in ``room`` once per ``ref`` and publish it if new; return the message.

    Raises ``RateLimited`` over the user's rate (the bucket the user's sockets in this worker
    spend too) and ``ServerBusy`` when the database has no connection to spare.
    """
    metrics.MESSAGES_RECEIVED.inc()
    if not runtime.limiter().allow(user.pk):
        metrics.RATE_LIMITED.inc()
        raise RateLimited(rate_limited_text())
    message, created = rooms.post(user, room.id, body, ref)
    if not created and message.body != body:
        # The ref of a page come back from the history (Back): another message, not a double
        # submit. Its ref derives from both, so that a double submit of it still stores one.
        message, created = rooms.post(user, room.id, body, _derived_ref(ref, body))
    if created:
        publish_message(message, room.slug, user.get_username())
        try:  # as after a socket's send: the message is stored and published already
            mentions.notify(message, room.slug, user)
        except Exception:
            logger.exception("storing the mentions of %s#%s failed", room.slug, message.seq)
    else:
        logger.info("a form resent %s#%s (ref already stored)", room.slug, message.seq)
    return message


def _derived_ref(ref, body):
    return "f-" + hashlib.sha256(f"{ref}\n{body}".encode()).hexdigest()[:40]


def rate_limited_text():
    """Say why a post was refused for its rate and what to do."""
    return (f"Slow down: at most {settings.CHAT_RATE_LIMIT:g} messages a second. "
            "Your message was not sent; press Send again in a moment.")


def publish_message(message, slug, username):
    """Publish a stored message to every worker's sockets in ``slug``, in seq order.

    With its seq, as ``send`` does: the rooms' cursors order it and drop duplicates, and a
    publish that fails is caught up from the database by every worker's cursor check, so a
    failure here is logged, not raised (the message is stored already).
    """
    event = protocol.message_event(message, slug, username)
    try:
        publish.publish(slug, event, seq=message.seq)
    except Exception:
        logger.exception("publishing %s#%s failed; the workers' cursor checks will read it",
                         slug, message.seq)

