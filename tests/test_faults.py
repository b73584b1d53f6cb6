"""Faults the server survives, each against a real gunicorn (README.md, "Faults it survives").

The database stopped mid-conversation and back, the database absent at start, slowloris
clients, and thousands of sockets dropped without a close frame.
"""
import os
import subprocess
import sys
import time

from tests.live import BASE_DIR, free_port

START_REFUSAL_TIMEOUT = 30  # seconds gunicorn may take to give up on an absent database


def test_an_unreachable_database_at_start_stops_gunicorn_with_what_to_fix(tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "DATABASE_URL": f"postgres://chat:secret@127.0.0.1:{port}/chat",
           "CHAT_BIND": f"127.0.0.1:{free_port()}", "CHAT_DB_START_TIMEOUT": "2",
           "WEB_CONCURRENCY": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi"],
                            cwd=BASE_DIR, env=env, capture_output=True, text=True,
                            timeout=START_REFUSAL_TIMEOUT)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"Cannot reach the database at 127.0.0.1:{port}/chat after 2 s (" in output, output
    assert ("Start PostgreSQL there, or fix DATABASE_URL (postgres://user:password@host:port/name), "
            "or unset it to use the embedded PostgreSQL; CHAT_DB_START_TIMEOUT sets how long to "
            "wait.") in output, output
    assert "secret" not in output, "the password leaked into the log"
    assert took < 15, f"took {took:.1f} s to give up"
