"""The chat's exceptions. The socket edge turns them into protocol ``error`` events."""


class ChatError(Exception):
    """A failure reported to the client as an ``error`` event with ``code``."""

    code = "server_error"

    def __init__(self, detail, ref=None):
        super().__init__(detail)
        self.detail = detail
        self.ref = ref


class BadRequest(ChatError):
    code = "bad_request"


class UnknownType(ChatError):
    code = "unknown_type"


class UnknownRoom(ChatError):
    code = "unknown_room"


class NotJoined(ChatError):
    code = "not_joined"


class Forbidden(ChatError):
    code = "forbidden"


class RateLimited(ChatError):
    code = "rate_limited"


class ServerBusy(ChatError):
    code = "server_error"


class EventTooLarge(ValueError):
    """An event over ``CHAT_EVENT_MAX_BYTES``: refused where it is published, never cut short."""
