"""Run the embedded PostgreSQL (the pip package ``pgserver``) when DATABASE_URL is unset.

The gunicorn master (``on_starting``), ``manage.py`` and the test run call
:func:`ensure_database_url` before Django reads its settings. Processes share one server per
data directory: the first starts it, the others attach, and the last to exit stops it.
This module must not import Django (the gunicorn master imports it before forking).
"""
import logging
import os
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "chat"


def data_dir():
    """Return the data directory: ``CHAT_PGDATA`` or ``var/pgdata`` in the checkout."""
    return Path(os.environ.get("CHAT_PGDATA") or BASE_DIR / "var" / "pgdata")


def ensure_database_url(database=DATABASE_NAME):
    """Start or attach to the embedded server unless DATABASE_URL is set; return the server.

    Sets ``DATABASE_URL`` in this process's environment (children inherit it) and creates
    the database if it does not exist. Returns None when DATABASE_URL was already set.
    """
    if os.environ.get("DATABASE_URL"):
        return None
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (servers, CI); /tmp is fine for a lock.
        warnings.simplefilter("ignore")
        import pgserver

    path = data_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(path)
    create_database(server, database)
    os.environ["DATABASE_URL"] = server.get_uri(database)
    logger.info("embedded PostgreSQL ready in %s (database %s)", path, database)
    return server


def stop(server):
    """Let go of the embedded server; it stops when no other process holds it."""
    if server is not None:
        server.cleanup()


def create_database(server, database):
    """Create ``database`` on ``server`` (a pgserver) unless it exists."""
    import psycopg2

    connection = psycopg2.connect(server.get_uri("postgres"))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{database}"')
                logger.info("created database %s", database)
    finally:
        connection.close()
