"""System checks for the traps of running Django under gevent (``manage.py check``)."""
import os
import sys

from django.conf import settings
from django.core.checks import Error, Tags, register

from chat.scrape import parse_networks
from project.binding import bind_is_loopback


@register(Tags.compatibility)
def check_gevent(app_configs, **kwargs):
    """Refuse to run without cooperative sockets, or with settings that leak or block."""
    patches = sys.modules.get("patches")  # never import it here: that would patch too late
    errors = []
    if patches is None or not patches.is_applied():
        errors.append(Error(
            "gevent patching is not active.",
            hint="Import patches first in every entry point (wsgi.py, manage.py, "
                 "gunicorn.conf.py; pytest: -p patches).",
            id="chat.E001"))
    errors.extend(database_errors(settings.DATABASES))
    if os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
        errors.append(Error(
            "DJANGO_ALLOW_ASYNC_UNSAFE is set.",
            hint="Under gevent one greenlet in async_to_sync makes every other greenlet's ORM "
                 "call fail; unset it and use no async views, middleware or receivers.",
            id="chat.E004"))
    return errors


def database_errors(databases):
    """Report databases that leak connections or block the hub under gevent."""
    errors = []
    for alias, database in databases.items():
        if database.get("CONN_MAX_AGE", 0) != 0:
            errors.append(Error(
                f"DATABASES[{alias!r}]['CONN_MAX_AGE'] must be 0 under gevent.",
                hint="Each greenlet is a thread to Django: a persistent connection per "
                     "finished greenlet is never reused. chat.db.db_work() bounds them.",
                id="chat.E002"))
        if database.get("ENGINE") != "django.db.backends.postgresql":
            errors.append(Error(
                f"DATABASES[{alias!r}] must be PostgreSQL.",
                hint="SQLite's C calls and lock waits block the gevent hub; set DATABASE_URL "
                     "to a PostgreSQL server or leave it unset for the embedded one.",
                id="chat.E003"))
    return errors


@register(Tags.security)
def check_password_hashing(app_configs, **kwargs):
    """Insist that passwords are hashed off the hub."""
    if settings.PASSWORD_HASHERS[:1] != ["chat.hashers.OffloadedPBKDF2PasswordHasher"]:
        return [Error(
            "The first password hasher does not hash off the gevent hub.",
            hint="Put 'chat.hashers.OffloadedPBKDF2PasswordHasher' first in PASSWORD_HASHERS: "
                 "a PBKDF2 check costs ~0.35 s of CPU and would stall every socket.",
            id="chat.E005")]
    return []


@register()
def check_chat_settings(app_configs, **kwargs):
    """Check that the CHAT_ numbers are positive."""
    names = ["CHAT_MAX_MESSAGE_BYTES", "CHAT_PING_INTERVAL", "CHAT_IDLE_TIMEOUT",
             "CHAT_SEND_QUEUE_SIZE", "CHAT_DB_CONCURRENCY", "CHAT_DB_WAIT_TIMEOUT",
             "CHAT_OFFLOAD_THREADS", "CHAT_HANDSHAKE_TIMEOUT", "CHAT_SEND_QUEUE_BYTES",
             "CHAT_DB_FRAME_RATE", "CHAT_DB_FRAME_BURST", "CHAT_TYPING_RATE", "CHAT_TYPING_BURST",
             "CHAT_SOCKETS_PER_USER", "CHAT_REVALIDATE_INTERVAL", "CHAT_EVENT_MAX_BYTES",
             "CHAT_MAX_FRAGMENTS", "CHAT_CONTROL_FRAMES_PER_SECOND", "CHAT_HANDSHAKE_RATE",
             "CHAT_HANDSHAKE_BURST", "CHAT_HANDSHAKES_IN_FLIGHT", "CHAT_RETRY_AFTER_MAX",
             "CHAT_DRAIN_RATE", "CHAT_PRESENCE_BATCH_MAX", "CHAT_PRESENCE_LIST_MAX",
             "CHAT_HTTP_POLL_TIMEOUT", "CHAT_HTTP_LINGER", "CHAT_HTTP_REQUEST_RATE",
             "CHAT_HTTP_REQUEST_BURST", "CHAT_HTTP_FRAMES", "CHAT_HTTP_MAX_BODY"]
    errors = not_positive(names)
    if settings.CHAT_HTTP_MAX_BODY < settings.CHAT_MAX_MESSAGE_BYTES + 1024:
        errors.append(Error(
            f"CHAT_HTTP_MAX_BODY ({settings.CHAT_HTTP_MAX_BODY}) is too small for one frame of "
            f"CHAT_MAX_MESSAGE_BYTES ({settings.CHAT_MAX_MESSAGE_BYTES}) in a long-poll request.",
            hint="Make CHAT_HTTP_MAX_BODY at least CHAT_MAX_MESSAGE_BYTES + 1024.",
            id="chat.E040"))
    if settings.CHAT_REF_MAX_CHARS > 64:
        errors.append(Error("CHAT_REF_MAX_CHARS must be at most 64: Message.ref holds 64 characters.",
                            id="chat.E007"))
    _, malformed = parse_networks(settings.CHAT_METRICS_ALLOWED)
    if malformed:
        errors.append(Error(
            f"CHAT_METRICS_ALLOWED has entries that are not addresses or networks: {malformed!r}.",
            hint="Use comma-separated IP addresses or CIDR networks, e.g. 127.0.0.1/8,::1,10.0.0.0/8.",
            id="chat.E008"))
    return errors


def not_positive(names):
    """Return a chat.E006 error for each setting in ``names`` that is not a positive number."""
    return [Error(f"{name} must be a positive number, not {getattr(settings, name)!r}.",
                  id="chat.E006")
            for name in names if not getattr(settings, name) > 0]


REVOCATION_MIDDLEWARE = "chat.revocation.RevocationMiddleware"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


@register(Tags.security)
def check_revocation_middleware(app_configs, **kwargs):
    """Insist that revocations are published after the session is saved."""
    middleware = list(settings.MIDDLEWARE)
    if REVOCATION_MIDDLEWARE in middleware and (
            SESSION_MIDDLEWARE not in middleware
            or middleware.index(REVOCATION_MIDDLEWARE) < middleware.index(SESSION_MIDDLEWARE)):
        return []
    return [Error(
        f"{REVOCATION_MIDDLEWARE} must be in MIDDLEWARE, before {SESSION_MIDDLEWARE}.",
        hint="It publishes the control events that close revoked sockets once the response is "
             "done; before the session middleware, that is after the session was saved, so a "
             "user who changed their own password keeps this session's sockets.",
        id="chat.E009")]


@register(Tags.security, deploy=False)
def check_debug_bind(app_configs, **kwargs):
    """Refuse DEBUG on an address other machines can reach: debug pages show code and settings."""
    if not settings.DEBUG or bind_is_loopback(settings.CHAT_BIND):
        return []
    return [Error(
        f"DEBUG is on and CHAT_BIND={settings.CHAT_BIND!r} is not a loopback address.",
        hint="Set DJANGO_DEBUG=0 with a SECRET_KEY of your own, or bind to 127.0.0.1 or [::1].",
        id="chat.E010")]


@register()
def check_edge_settings(app_configs, **kwargs):
    """Check the numbers of log-in admission, the per-address limits and database timeouts."""
    positive = ["CHAT_HASH_RETRY_AFTER", "CHAT_SIGNUP_MAX_PER_ADDRESS", "CHAT_SIGNUP_WINDOW",
                "CHAT_ROOM_CREATE_MAX_PER_ADDRESS", "CHAT_ROOM_CREATE_WINDOW"]
    errors = not_positive(positive)
    if settings.CHAT_HASH_QUEUE < 0:
        errors.append(Error(f"CHAT_HASH_QUEUE must be 0 or more, not {settings.CHAT_HASH_QUEUE!r}.",
                            id="chat.E006"))
    return errors


@register()
def check_proxy_settings(app_configs, **kwargs):
    """Check the trusted proxies and the request-body deadline (chat/proxies.py, chat/worker.py)."""
    errors = []
    _, malformed = parse_networks(settings.CHAT_TRUSTED_PROXIES)
    if malformed:
        errors.append(Error(
            f"CHAT_TRUSTED_PROXIES has entries that are not addresses or networks: {malformed!r}.",
            hint="Use comma-separated IP addresses or CIDR networks of your proxies, e.g. 127.0.0.1,10.0.0.0/8.",
            id="chat.E030"))
    if not settings.CHAT_BODY_TIMEOUT > 0:
        errors.append(Error(f"CHAT_BODY_TIMEOUT must be a positive number, not {settings.CHAT_BODY_TIMEOUT!r}.",
                            id="chat.E031"))
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and not settings.CHAT_TRUSTED_PROXIES:
        # The handler strips X-Forwarded-Proto from untrusted peers: with SECURE_SSL_REDIRECT
        # every request would be redirected again, forever.
        errors.append(Error(
            "SECURE_PROXY_SSL_HEADER is set but CHAT_TRUSTED_PROXIES is empty: X-Forwarded-Proto "
            "is removed from every request.",
            hint="Set CHAT_TRUSTED_PROXIES to your proxy's addresses; the scheme then comes from "
                 "it and SECURE_PROXY_SSL_HEADER is not needed.",
            id="chat.E032"))
    return errors
