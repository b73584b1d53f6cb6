"""The wire protocol (docs/protocol.md): parse and validate client frames, build server events.

Frames are UTF-8 JSON objects with a ``type``; a client frame may carry ``ref`` (a string of
1 to 64 characters) that every reply or error caused by it echoes.
"""
import json
import re
from dataclasses import dataclass, field

from django.conf import settings

from chat.errors import BadRequest

SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}\Z")


@dataclass(frozen=True)
class Frame:
    """A parsed client frame: its type, its ref (or None) and all of its fields."""

    type: str
    ref: str | None
    fields: dict = field(repr=False)

    def slug(self, name="room"):
        """Return the room slug in ``name``, or raise ``BadRequest``."""
        value = self.fields.get(name)
        if not isinstance(value, str) or not SLUG.match(value):
            raise BadRequest(f"{name} must be a room slug (letters, digits, - and _)", self.ref)
        return value

    def integer(self, name, default=None, minimum=0, maximum=None):
        """Return the whole number in ``name`` (or ``default`` when absent), or raise."""
        value = self.fields.get(name)
        if value is None:  # absent, or null
            return default
        in_range = (isinstance(value, int) and not isinstance(value, bool) and value >= minimum
                    and (maximum is None or value <= maximum))
        if not in_range:
            upper = f" to {maximum}" if maximum is not None else " or more"
            raise BadRequest(f"{name} must be a whole number from {minimum}{upper}", self.ref)
        return value

    def body(self):
        """Return the message body: 1 to CHAT_BODY_MAX_CHARS code points, not only space."""
        value = self.fields.get("body")
        limit = settings.CHAT_BODY_MAX_CHARS
        if not isinstance(value, str) or not 1 <= len(value) <= limit or value.isspace():
            raise BadRequest(f"body must be text of 1 to {limit} characters, "
                             "not only white space", self.ref)
        if not is_text(value):
            raise BadRequest("body must be Unicode text without NUL characters or lone "
                             "surrogates", self.ref)
        return value


def is_text(value):
    """Tell whether PostgreSQL can store ``value``: no NUL, no lone surrogate (JSON allows both)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(text):
    """Turn the text of one client message into a :class:`Frame`, or raise ``BadRequest``."""
    try:
        data = json.loads(text)
    except RecursionError:
        # The C decoder recurses per nesting level: 10,000 '[' must not escape as a crash.
        raise BadRequest("the frame is nested too deeply") from None
    except ValueError:
        raise BadRequest("the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the frame must be a JSON object")
    if _too_deep(text, data, settings.CHAT_MAX_JSON_DEPTH):
        raise BadRequest("the frame is nested too deeply")
    ref = data.get("ref")
    limit = settings.CHAT_REF_MAX_CHARS
    if "ref" in data and not (isinstance(ref, str) and 1 <= len(ref) <= limit):
        # The error carries no ref: the ref itself is what is wrong (PROTOCOL.md, Envelope).
        raise BadRequest(f"ref must be a string of 1 to {limit} characters")
    if "ref" in data and not is_text(ref):
        raise BadRequest("ref must be text without NUL characters or lone surrogates")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise BadRequest("the frame has no type", ref=ref)
    return Frame(kind, ref, data)


def _too_deep(text, data, limit):
    # Counting brackets is C-speed and settles almost every frame; walk only when it can't.
    if text.count("[") + text.count("{") <= limit:
        return False
    level = [data]
    for _ in range(limit):
        level = [child for node in level
                 for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, (dict, list))]
        if not level:
            return False
    return True


def event(kind, ref=None, **fields):
    """Build a server event; ``ref`` is included only when there is one."""
    built = {"type": kind, **fields}
    if ref is not None:
        built["ref"] = ref
    return built


def message_event(message, room_slug, username):
    """Build the ``message`` event of a stored message (also the items of history lists)."""
    built = event("message", message.ref, room=room_slug, seq=message.seq, id=message.id,
                  user=username, body=message.body, ts=timestamp(message.created))
    edited = getattr(message, "edited", None)  # history rows read without it carry none
    return built if edited is None else with_edit(built, edited, message.change)


def timestamp(moment):
    """Format a datetime as the protocol does: ISO 8601 in UTC, ending in ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")


def with_edit(message, edited, change):
    """Mark a ``message`` event (a dict) as edited at ``edited`` (a datetime) by ``change``."""
    message["edited"] = timestamp(edited)
    message["change"] = change
    return message


def message_edited(room_slug, seq, message_id, body, edited, change, ref=None):
    """Build ``message_edited``: message ``seq`` of the room now reads ``body``."""
    return event("message_edited", ref, room=room_slug, seq=seq, id=message_id, body=body,
                 edited=timestamp(edited), change=change)


def message_deleted(room_slug, message_id, seq, change, ref=None):
    """Build ``message_deleted`` (the admin's fields, and the change seq that deleted it)."""
    return event("message_deleted", ref, room=room_slug, id=message_id, seq=seq, change=change)


def error_event(error):
    """Build the ``error`` event for a ``ChatError``."""
    return event("error", error.ref, code=error.code, detail=error.detail)


def encode(server_event):
    """Serialise an event to the UTF-8 JSON text of one frame."""
    try:
        return json.dumps(server_event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800") has no UTF-8 form; escaped, it survives.
        return json.dumps(server_event, separators=(",", ":")).encode("ascii")


def joined_body(ref, slug, seq, bodies, more, presence, **extra):
    """Build the encoded ``joined`` event around ``bodies``, the messages already encoded.

    The same bytes as ``encode(event("joined", ...))`` of the decoded messages: a join served
    from memory joins the stored bodies instead of encoding fifty messages again.
    """
    head = encode({"type": "joined", "room": slug, "seq": seq})
    tail = encode(event(None, ref, more=more, presence=presence, **extra))
    tail = tail[tail.index(b",") + 1:]  # drop the placeholder "type" of the tail
    return b"".join((head[:-1], b',"messages":[', b",".join(bodies), b"],", tail))
