"""Which browser origins may use the chat endpoints (PROTOCOL.md, Connection)."""
from urllib.parse import urlsplit


def origin_allowed(origin, host, allowed_origins):
    """Tell whether a handshake's ``Origin`` may open a socket.

    No Origin (a non-browser client) is allowed; otherwise its host and port must equal the
    request's ``Host`` (the scheme is not compared), or the origin be listed in the setting.
    """
    if origin is None:
        return True
    origin = origin.strip().lower()
    if origin in (o.lower().rstrip("/") for o in allowed_origins):
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    default_port = {"http": ":80", "https": ":443"}.get(parts.scheme, "")
    netloc = parts.netloc.removesuffix(default_port) if default_port else parts.netloc
    host = (host or "").strip().lower()
    return bool(netloc) and netloc in (host, host.removesuffix(":80"), host.removesuffix(":443"))
