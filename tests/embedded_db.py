"""pytest plugin: give the test run a PostgreSQL before pytest-django reads the settings.

Loaded with ``-p`` right after ``patches``; a conftest would run after pytest-django has
already set Django up. Uses its own data directory, so a ``make run`` server is left alone.
"""
import os

from project import embedded

if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("CHAT_PGDATA", str(embedded.BASE_DIR / "var" / "test-pgdata"))
    _server = embedded.ensure_database_url()
