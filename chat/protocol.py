"""The wire protocol (docs/protocol.md): parse client frames, build server events.

Frames are UTF-8 JSON objects with a ``type``; a client frame may carry ``ref`` (a string of
1 to 64 characters) that every reply or error caused by it echoes.
"""
import json
from dataclasses import dataclass, field

from chat.errors import BadRequest

REF_MAX_LENGTH = 64


@dataclass(frozen=True)
class Frame:
    """A parsed client frame: its type, its ref (or None) and all of its fields."""

    type: str
    ref: str | None
    fields: dict = field(repr=False)


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
    ref = data.get("ref")
    if "ref" in data and not (isinstance(ref, str) and 1 <= len(ref) <= REF_MAX_LENGTH):
        # The error carries no ref: the ref itself is what is wrong (PROTOCOL.md, Envelope).
        raise BadRequest(f"ref must be a string of 1 to {REF_MAX_LENGTH} characters")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise BadRequest("the frame has no type", ref=ref)
    return Frame(kind, ref, data)


def event(kind, ref=None, **fields):
    """Build a server event; ``ref`` is included only when there is one."""
    built = {"type": kind, **fields}
    if ref is not None:
        built["ref"] = ref
    return built


def error_event(error):
    """Build the ``error`` event for a ``ChatError``."""
    return event("error", error.ref, code=error.code, detail=error.detail)


def encode(server_event):
    """Serialise an event to the UTF-8 JSON text of one frame."""
    return json.dumps(server_event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
