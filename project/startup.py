"""Checks the gunicorn master makes before it forks workers: is the database reachable?

Without this, workers boot happily against a database that is not there: pages answer 500,
sockets ``server_error``, and the broker retries forever, so a wrong ``DATABASE_URL`` looks
like a running server. The master waits ``CHAT_DB_START_TIMEOUT`` seconds (a database that
starts alongside the server gets that long), then stops with a message saying what to fix.
This module must not import Django (the master stays free of it).
"""
import logging
import time
from urllib.parse import urlsplit

import psycopg2

logger = logging.getLogger(__name__)

RETRY_DELAY = 0.5  # seconds between connection attempts


class DatabaseUnreachable(RuntimeError):
    """The database did not answer in time; the message says what to do."""


def wait_for_database(url, timeout):
    """Connect to ``url`` (a postgres:// URL) until it answers or ``timeout`` seconds pass.

    Raises :class:`DatabaseUnreachable` with the last error and what to check.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            # connect_timeout is whole seconds, at least 2 (libpq ignores less).
            psycopg2.connect(url, connect_timeout=max(2, int(left) + 1),
                             application_name="chat-startup-check").close()
            return
        except psycopg2.Error as error:
            last = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if time.monotonic() + RETRY_DELAY >= deadline:
            raise DatabaseUnreachable(
                f"Cannot reach the database at {describe(url)} after {timeout:g} s ({last}). "
                "Start PostgreSQL there, or fix DATABASE_URL "
                "(postgres://user:password@host:port/name), or unset it to use the embedded "
                "PostgreSQL; CHAT_DB_START_TIMEOUT sets how long to wait.")
        logger.info("database not reachable yet (%s); retrying", last)
        time.sleep(RETRY_DELAY)


def describe(url):
    """Return ``host:port/name`` of a database URL, without its password."""
    parts = urlsplit(url)
    host = parts.hostname or "the local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"
