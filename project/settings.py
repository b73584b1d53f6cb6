"""Settings for the chat project, read from the environment.

Development defaults are safe to run on a laptop; set ``DJANGO_DEBUG=0`` with a real
``SECRET_KEY``, ``ALLOWED_HOSTS`` and ``DATABASE_URL`` in production (``manage.py check --deploy``
then reports nothing). Our own settings are prefixed ``CHAT_`` and documented in README.md.
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default):
    """Read a boolean from the environment: 1/true/yes/on or 0/false/no/off."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use 1 or 0.")


def env_list(name, default=()):
    """Read a comma-separated list from the environment."""
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_number(name, default, kind=int):
    """Read an int or float from the environment."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a {kind.__name__}.") from None


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY: it is required when DJANGO_DEBUG=0.")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files in-process, before sessions and auth: a stylesheet needs no database.
    "chat.middleware.StaticFilesMiddleware",  # WhiteNoise
    "chat.middleware.ContentSecurityPolicyMiddleware",
    # Before sessions: publishes revocations once the session is saved (chat/revocation.py).
    "chat.revocation.RevocationMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL only: under gevent SQLite's C calls and lock waits block the hub. With DATABASE_URL
# unset, manage.py, gunicorn and the tests start the embedded server (project/embedded.py) and
# set DATABASE_URL for their process before these settings are read.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Start through manage.py, gunicorn -c gunicorn.conf.py or "
        "make test, which start the embedded PostgreSQL, or set DATABASE_URL=postgres://..."
    )
# CONN_MAX_AGE must stay 0: a greenlet is a thread to Django, and a persistent connection per
# finished greenlet is never reused (check chat.E002).
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
# Name each process's connections in pg_stat_activity ("chat:<pid>"): who holds what.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("application_name", f"chat:{os.getpid()}")
# Timeouts on every connection (libpq parameters; the CHAT_DB_ settings below, README.md).
CHAT_DB_CONNECT_TIMEOUT = env_number("CHAT_DB_CONNECT_TIMEOUT", 5)
CHAT_DB_KEEPALIVES_IDLE = env_number("CHAT_DB_KEEPALIVES_IDLE", 10)
CHAT_DB_KEEPALIVES_INTERVAL = env_number("CHAT_DB_KEEPALIVES_INTERVAL", 5)
CHAT_DB_KEEPALIVES_COUNT = env_number("CHAT_DB_KEEPALIVES_COUNT", 3)
CHAT_DB_TCP_USER_TIMEOUT = env_number("CHAT_DB_TCP_USER_TIMEOUT", 15.0, float)
# 0 sends none: PgBouncer refuses the "options" startup parameter unless told to ignore it.
CHAT_DB_STATEMENT_TIMEOUT = env_number("CHAT_DB_STATEMENT_TIMEOUT", 30.0, float)
DATABASES["default"]["OPTIONS"].update({
    "connect_timeout": CHAT_DB_CONNECT_TIMEOUT, "keepalives": 1,
    "keepalives_idle": CHAT_DB_KEEPALIVES_IDLE, "keepalives_interval": CHAT_DB_KEEPALIVES_INTERVAL,
    "keepalives_count": CHAT_DB_KEEPALIVES_COUNT,
    "tcp_user_timeout": int(CHAT_DB_TCP_USER_TIMEOUT * 1000),  # milliseconds
})
if CHAT_DB_STATEMENT_TIMEOUT > 0:
    DATABASES["default"]["OPTIONS"]["options"] = " ".join(filter(None, [
        DATABASES["default"]["OPTIONS"].get("options", ""),
        f"-c statement_timeout={int(CHAT_DB_STATEMENT_TIMEOUT * 1000)}"]))
# Debug pages mask the password of any URL in a setting (DATABASE_URL, REDIS_URL, ...).
DEFAULT_EXCEPTION_REPORTER_FILTER = "chat.debugpages.CredentialsReporterFilter"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The first hasher hashes on native threads (chat/offload.py): PBKDF2 at 1,000,000 iterations costs about
# 0.35 s of CPU, which would stall every socket of the worker (chat/hashers.py).
PASSWORD_HASHERS = ["chat.hashers.OffloadedPBKDF2PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves the apps' static/ folders from the gunicorn process itself, so
# `gunicorn -c gunicorn.conf.py wsgi` alone serves everything and collectstatic is optional.
# It indexes the files (os.stat each) when the worker loads the application, before the
# warm-up and the blocking monitor; never per request (its DEBUG default), which would put
# file-system calls on the hub. Restart the server after editing a static file.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

# Security: secure cookies and HSTS whenever DEBUG is off (production).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers probe these, and Prometheus scrapes /metrics, over plain HTTP (chat/health.py,
# chat/scrape.py).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_number("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# Preloading is opt-in: once browsers ship the domain in their preload list it is hard to undo.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# check --deploy warns when preload is off (security.W021); off is the choice made above.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's default config adds a second console handler to "django" under DEBUG.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "pgserver": {"level": "WARNING"},
    },
}

# --- The chat server's own settings (README.md, "Configuration") ---
# Extra origins allowed to open /ws/ besides the page's own host (PROTOCOL.md, Connection).
CHAT_ALLOWED_ORIGINS = env_list("CHAT_ALLOWED_ORIGINS")
# An origin that may open /ws/ may post to /http/ too (Django's CSRF check reads this list).
CSRF_TRUSTED_ORIGINS += [o for o in CHAT_ALLOWED_ORIGINS if o not in CSRF_TRUSTED_ORIGINS]
CHAT_WS_PATH = "/ws/"
# The HTTP long-poll transport (docs/protocol.md, section 7; chat/longpoll.py).
CHAT_HTTP_PATH = "/http/"
# Seconds a poll waits for an event before it returns empty (under proxies' read timeouts).
CHAT_HTTP_POLL_TIMEOUT = env_number("CHAT_HTTP_POLL_TIMEOUT", 25.0, float)
# Seconds a stream lives without a request before it ends (its presence too).
CHAT_HTTP_LINGER = env_number("CHAT_HTTP_LINGER", 15.0, float)
# Seconds between two answers to a stream's bare polls: events of the interval go together.
CHAT_HTTP_MIN_INTERVAL = env_number("CHAT_HTTP_MIN_INTERVAL", 0.05, float)
# Requests with frames a second one stream may make (bursts of CHAT_HTTP_REQUEST_BURST).
CHAT_HTTP_REQUEST_RATE = env_number("CHAT_HTTP_REQUEST_RATE", 10.0, float)
CHAT_HTTP_REQUEST_BURST = env_number("CHAT_HTTP_REQUEST_BURST", 20)
# The most client frames in one request, and the most bytes in its body.
CHAT_HTTP_FRAMES = env_number("CHAT_HTTP_FRAMES", 20)
CHAT_HTTP_MAX_BODY = env_number("CHAT_HTTP_MAX_BODY", 256 * 1024)
# Seconds a client gets to send its request line and headers (slowloris; chat/worker.py).
CHAT_HANDSHAKE_TIMEOUT = env_number("CHAT_HANDSHAKE_TIMEOUT", 10.0, float)
CHAT_MAX_MESSAGE_BYTES = env_number("CHAT_MAX_MESSAGE_BYTES", 65536)
# Frame floods (chat/wsmends.py): the most frames one message may come in (one more: 1009),
# and the ping and pong frames a socket may send a second, in bursts of twice as many (1008).
CHAT_MAX_FRAGMENTS = env_number("CHAT_MAX_FRAGMENTS", 128)
CHAT_CONTROL_FRAMES_PER_SECOND = env_number("CHAT_CONTROL_FRAMES_PER_SECOND", 10.0, float)
CHAT_PING_INTERVAL = env_number("CHAT_PING_INTERVAL", 25.0, float)
CHAT_IDLE_TIMEOUT = env_number("CHAT_IDLE_TIMEOUT", 60.0, float)
CHAT_SEND_QUEUE_SIZE = env_number("CHAT_SEND_QUEUE_SIZE", 1000)
# ... and in bytes: one frame always fits an empty queue, beyond it at most this many.
CHAT_SEND_QUEUE_BYTES = env_number("CHAT_SEND_QUEUE_BYTES", 4 * 1024 * 1024)
# Kernel send buffer of each WebSocket in bytes; 0 keeps the kernel's autotuning (up to 4 MiB).
CHAT_SOCKET_SEND_BUFFER = env_number("CHAT_SOCKET_SEND_BUFFER", 0)
# Connections one worker may hold open at once for socket work (chat/db.py).
CHAT_DB_CONCURRENCY = env_number("CHAT_DB_CONCURRENCY", 10)
# Seconds a unit of socket work waits for a database slot before answering server_error.
CHAT_DB_WAIT_TIMEOUT = env_number("CHAT_DB_WAIT_TIMEOUT", 30.0, float)
# Protocol limits (docs/protocol.md). The defaults are those of PROTOCOL.md.
CHAT_BODY_MAX_CHARS = env_number("CHAT_BODY_MAX_CHARS", 4000)
CHAT_REF_MAX_CHARS = env_number("CHAT_REF_MAX_CHARS", 64)
CHAT_MAX_JSON_DEPTH = env_number("CHAT_MAX_JSON_DEPTH", 16)
CHAT_HISTORY_MAX = env_number("CHAT_HISTORY_MAX", 100)
CHAT_HISTORY_DEFAULT = env_number("CHAT_HISTORY_DEFAULT", 50)
CHAT_JOIN_MAX_MESSAGES = env_number("CHAT_JOIN_MAX_MESSAGES", 500)
CHAT_ROOMS_PER_SOCKET = env_number("CHAT_ROOMS_PER_SOCKET", 50)
# Per-user token bucket for send and typing: a rate per second and a burst.
CHAT_RATE_LIMIT = env_number("CHAT_RATE_LIMIT", 10.0, float)
CHAT_RATE_BURST = env_number("CHAT_RATE_BURST", 20)
# Per socket: join, leave and history (each costs the database), and typing (slower still).
CHAT_DB_FRAME_RATE = env_number("CHAT_DB_FRAME_RATE", 5.0, float)
CHAT_DB_FRAME_BURST = env_number("CHAT_DB_FRAME_BURST", 20)
CHAT_TYPING_RATE = env_number("CHAT_TYPING_RATE", 1.0, float)
CHAT_TYPING_BURST = env_number("CHAT_TYPING_BURST", 3)
# Who may stay connected (chat/authority.py): sockets per user (all workers, approximately),
# the periodic revalidation of every socket's session, and how long a room's membership is
# trusted before send or history checks it again.
CHAT_SOCKETS_PER_USER = env_number("CHAT_SOCKETS_PER_USER", 20)
CHAT_REVALIDATE_INTERVAL = env_number("CHAT_REVALIDATE_INTERVAL", 60.0, float)
CHAT_MEMBERSHIP_RECHECK = env_number("CHAT_MEMBERSHIP_RECHECK", 5.0, float)
# Seconds a worker remembers a session a handshake found signed in (0: never); revocations
# forget it at once (chat/handshake.py).
CHAT_SESSION_CACHE_TTL = env_number("CHAT_SESSION_CACHE_TTL", 5.0, float)
# Seconds a room waits for a missing seq before reading it from the database.
CHAT_GAP_WAIT = env_number("CHAT_GAP_WAIT", 0.5, float)
# How often each worker checks, in one query, that no room's cursor is behind Room.last_seq
# (a publish that failed for good): a quiet room's last message arrives within this.
CHAT_CURSOR_CHECK_INTERVAL = env_number("CHAT_CURSOR_CHECK_INTERVAL", 3.0, float)
# Presence across workers: each worker refreshes its rows this often (seconds); rows older
# than the TTL belong to a worker that died and are expired.
CHAT_PRESENCE_HEARTBEAT = env_number("CHAT_PRESENCE_HEARTBEAT", 10.0, float)
CHAT_PRESENCE_TTL = env_number("CHAT_PRESENCE_TTL", 30.0, float)
# A user's last socket leaving a room is announced after this long, unless they come back.
CHAT_PRESENCE_DEBOUNCE = env_number("CHAT_PRESENCE_DEBOUNCE", 2.0, float)
# Arrivals go to chat_presence in batches of at most this many (room, user) pairs: those that
# came while the last batch was written (chat/presence.py, chat/batching.py).
CHAT_PRESENCE_BATCH_MAX = env_number("CHAT_PRESENCE_BATCH_MAX", 500)
# joined.presence lists at most this many usernames (then presence_more and presence_count);
# the who frame pages the rest, at most this many a page.
CHAT_PRESENCE_LIST_MAX = env_number("CHAT_PRESENCE_LIST_MAX", 100)
# Seconds a closing peer gets to read our close frame and answer it.
CHAT_CLOSE_TIMEOUT = env_number("CHAT_CLOSE_TIMEOUT", 5.0, float)
# The broker between the hubs of all workers and hosts: "postgres" (LISTEN/NOTIFY on the
# database, nothing else to run), "redis" (pub/sub on REDIS_URL) or "memory" (one worker
# only; tests and benchmarks).
CHAT_BROKER = os.environ.get("CHAT_BROKER", "postgres")
# Namespaces the broker per deployment sharing one database or Redis: the NOTIFY channel
# (default chat_events) or the Redis prefix "<channel>:" (default "chat:").
CHAT_BROKER_CHANNEL = os.environ.get("CHAT_BROKER_CHANNEL", "")
# The largest broker payload (event and header) carried whole; publish() raises EventTooLarge above it.
CHAT_EVENT_MAX_BYTES = env_number("CHAT_EVENT_MAX_BYTES", 1048576)
# LISTEN cannot pass through PgBouncer in transaction mode: when DATABASE_URL points at one,
# give the PostgreSQL server itself here (postgres://...); empty means DATABASE_URL.
CHAT_LISTEN_DATABASE_URL = os.environ.get("CHAT_LISTEN_DATABASE_URL", "")
# The Redis server of CHAT_BROKER=redis, e.g. redis://127.0.0.1:6379/0 (query options such as
# ?max_connections=20 size each worker's publishing pool, default 10).
REDIS_URL = os.environ.get("REDIS_URL", "")
# Native threads for offload() (password hashing): enough to use the cores, few enough to
# leave the hub its share of the CPU.
CHAT_OFFLOAD_THREADS = env_number("CHAT_OFFLOAD_THREADS", 2)
# Who may read /metrics (chat/scrape.py): clients whose address is in these networks, and
# any client sending "Authorization: Bearer <CHAT_METRICS_TOKEN>" when the token is set.
CHAT_METRICS_ALLOWED = env_list("CHAT_METRICS_ALLOWED", ["127.0.0.1/8", "::1"])
CHAT_METRICS_TOKEN = os.environ.get("CHAT_METRICS_TOKEN", "")
# Log-in throttling (chat/throttle.py): failed attempts in a sliding window, per username and
# per client address, shared by every worker through the database.
CHAT_LOGIN_WINDOW = env_number("CHAT_LOGIN_WINDOW", 300.0, float)
CHAT_LOGIN_MAX_FAILURES = env_number("CHAT_LOGIN_MAX_FAILURES", 5)
CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS = env_number("CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS", 50)
# Test-only frames (_sleep, _spin) that prove the hub never blocks; never enable in production.
CHAT_TEST_HOOKS = env_bool("CHAT_TEST_HOOKS", False)
# Hashing admission (chat/hashers.py): per worker, the log-ins and sign-ups that may wait for
# one of the CHAT_OFFLOAD_THREADS; beyond them 503 with Retry-After (seconds).
CHAT_HASH_QUEUE = env_number("CHAT_HASH_QUEUE", 2 * CHAT_OFFLOAD_THREADS)
CHAT_HASH_RETRY_AFTER = env_number("CHAT_HASH_RETRY_AFTER", 2)
# Per client address and worker, in a sliding window of seconds (chat/throttle.py): sign-ups
# and rooms created.
CHAT_SIGNUP_MAX_PER_ADDRESS = env_number("CHAT_SIGNUP_MAX_PER_ADDRESS", 10)
CHAT_SIGNUP_WINDOW = env_number("CHAT_SIGNUP_WINDOW", 3600.0, float)
CHAT_ROOM_CREATE_MAX_PER_ADDRESS = env_number("CHAT_ROOM_CREATE_MAX_PER_ADDRESS", 30)
CHAT_ROOM_CREATE_WINDOW = env_number("CHAT_ROOM_CREATE_WINDOW", 3600.0, float)
# Where gunicorn listens (gunicorn.conf.py); check chat.E010 refuses DEBUG on a non-loopback one.
CHAT_BIND = os.environ.get("CHAT_BIND", "127.0.0.1:8000")
# The HTTP edge behind a reverse proxy (chat/proxies.py, README "Deploy"): peers (addresses and
# CIDR networks) whose X-Forwarded-For, -Proto and -Host are believed; empty trusts no one, and
# from an untrusted peer those headers are removed before Django sees them.
CHAT_TRUSTED_PROXIES = env_list("CHAT_TRUSTED_PROXIES")
# Seconds a client gets to send a request body, from its first read (slow POSTs; chat/worker.py).
CHAT_BODY_TIMEOUT = env_number("CHAT_BODY_TIMEOUT", 30.0, float)
# Storm control (chat/admission.py, chat/shutdown.py, docs/protocol.md "Restarts and admission"):
# each worker sets up at most CHAT_HANDSHAKE_RATE WebSocket handshakes a second (bursts of
# CHAT_HANDSHAKE_BURST) and CHAT_HANDSHAKES_IN_FLIGHT at once, answering the excess with 503 and
# a Retry-After of 1 to CHAT_RETRY_AFTER_MAX seconds; a stopping worker closes CHAT_DRAIN_RATE
# sockets a second, each told to wait a random delay before it comes back.
CHAT_HANDSHAKE_RATE = env_number("CHAT_HANDSHAKE_RATE", 2000.0, float)
CHAT_HANDSHAKE_BURST = env_number("CHAT_HANDSHAKE_BURST", 2000)
CHAT_HANDSHAKES_IN_FLIGHT = env_number("CHAT_HANDSHAKES_IN_FLIGHT", 1000)
CHAT_RETRY_AFTER_MAX = env_number("CHAT_RETRY_AFTER_MAX", 10)
CHAT_DRAIN_RATE = env_number("CHAT_DRAIN_RATE", 5000.0, float)
# Edit and delete (chat/edits.py): seconds after sending that a user may still edit or delete
# their own message (staff always), and the most changes a resuming join carries.
CHAT_EDIT_WINDOW = env_number("CHAT_EDIT_WINDOW", 900.0, float)
CHAT_JOIN_MAX_CHANGES = env_number("CHAT_JOIN_MAX_CHANGES", 500)
# Full-text search (chat/search.py, /search/): the text search configuration of the GIN index
# on the messages' bodies and of every query (set it before `migrate`: the index is built with
# it, and a query with another one can't use the index); the most seconds one search may take
# (SET LOCAL statement_timeout); searches a second per user and worker on average, in bursts
# of CHAT_SEARCH_BURST; the longest query, in characters.
CHAT_SEARCH_CONFIG = os.environ.get("CHAT_SEARCH_CONFIG", "english")
CHAT_SEARCH_TIMEOUT = env_number("CHAT_SEARCH_TIMEOUT", 2.0, float)
CHAT_SEARCH_RATE = env_number("CHAT_SEARCH_RATE", 1.0, float)
CHAT_SEARCH_BURST = env_number("CHAT_SEARCH_BURST", 10)
CHAT_SEARCH_MAX_CHARS = env_number("CHAT_SEARCH_MAX_CHARS", 200)
# Unread counts (chat/reads.py): a room's count stops at this many (shown as "100+"), so that
# a page of rooms reads a bounded range of each room's index however far behind the user is.
CHAT_UNREAD_MAX = env_number("CHAT_UNREAD_MAX", 100)
# Mentions (chat/mentions.py): the most distinct @usernames of one message that are looked up
# and notified; the rest are shown highlighted but notify nobody.
CHAT_MENTIONS_MAX = env_number("CHAT_MENTIONS_MAX", 20)
