"""System checks name the gevent traps, malformed settings and unsafe defaults (chat.E001 to chat.E010)."""
import sys

import pytest
from django.test import override_settings

from chat import checks


def ids(errors):
    return [error.id for error in errors]


def test_no_errors_with_the_project_settings():
    assert checks.check_gevent(None) == []
    assert checks.check_password_hashing(None) == []
    assert checks.check_chat_settings(None) == []


def test_missing_patches_are_reported(monkeypatch):
    monkeypatch.delitem(sys.modules, "patches")
    assert ids(checks.check_gevent(None)) == ["chat.E001"]


def test_persistent_connections_are_reported(settings):
    databases = {"default": {**settings.DATABASES["default"], "CONN_MAX_AGE": 60}}
    assert ids(checks.database_errors(databases)) == ["chat.E002"]


def test_sqlite_is_reported():
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}
    assert ids(checks.database_errors(databases)) == ["chat.E003"]


def test_async_unsafe_escape_hatch_is_reported(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    assert ids(checks.check_gevent(None)) == ["chat.E004"]


@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"])
def test_hashing_on_the_hub_is_reported():
    assert ids(checks.check_password_hashing(None)) == ["chat.E005"]


@pytest.mark.parametrize("name", ["CHAT_DB_CONCURRENCY", "CHAT_IDLE_TIMEOUT", "CHAT_HTTP_LINGER"])
def test_non_positive_numbers_are_reported(settings, name):
    setattr(settings, name, 0)
    errors = checks.check_chat_settings(None)
    assert ids(errors) == ["chat.E006"]
    assert errors[0].msg == f"{name} must be a positive number, not 0."


def test_a_long_poll_body_too_small_for_one_frame_is_reported(settings):
    settings.CHAT_HTTP_MAX_BODY = settings.CHAT_MAX_MESSAGE_BYTES
    errors = checks.check_chat_settings(None)
    assert ids(errors) == ["chat.E040"]
    assert errors[0].hint == "Make CHAT_HTTP_MAX_BODY at least CHAT_MAX_MESSAGE_BYTES + 1024."


def test_refs_longer_than_the_column_are_reported(settings):
    settings.CHAT_REF_MAX_CHARS = 65
    assert ids(checks.check_chat_settings(None)) == ["chat.E007"]


def test_malformed_metrics_networks_are_reported(settings):
    settings.CHAT_METRICS_ALLOWED = ["127.0.0.1/8", "10.0.0.0/33", "localhost"]
    errors = checks.check_chat_settings(None)
    assert ids(errors) == ["chat.E008"]
    assert errors[0].msg == ("CHAT_METRICS_ALLOWED has entries that are not addresses or networks: "
                             "['10.0.0.0/33', 'localhost'].")


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", ":8000", "[::]:8000", "192.0.2.10:80",
                                  "chat.example.com:8000"])
def test_debug_on_a_public_bind_is_refused(settings, bind):
    settings.DEBUG, settings.CHAT_BIND = True, bind
    [error] = checks.check_debug_bind(None)
    assert error.id == "chat.E010"
    assert error.msg == f"DEBUG is on and CHAT_BIND={bind!r} is not a loopback address."


@pytest.mark.parametrize("bind", ["127.0.0.1:8000", "127.0.0.2:80", "[::1]:8000", "localhost:8000",
                                  "unix:/run/chat.sock"])
def test_debug_on_a_loopback_bind_is_allowed(settings, bind):
    settings.DEBUG, settings.CHAT_BIND = True, bind
    assert checks.check_debug_bind(None) == []


def test_a_public_bind_without_debug_is_allowed(settings):
    settings.DEBUG, settings.CHAT_BIND = False, "0.0.0.0:8000"
    assert checks.check_debug_bind(None) == []


@pytest.mark.parametrize("name", ["CHAT_HASH_RETRY_AFTER", "CHAT_SIGNUP_MAX_PER_ADDRESS",
                                  "CHAT_SIGNUP_WINDOW", "CHAT_ROOM_CREATE_MAX_PER_ADDRESS",
                                  "CHAT_ROOM_CREATE_WINDOW"])
def test_non_positive_edge_numbers_are_reported(settings, name):
    setattr(settings, name, 0)
    [error] = checks.check_edge_settings(None)
    assert error.id == "chat.E006" and error.msg == f"{name} must be a positive number, not 0."


def test_a_negative_hash_queue_is_reported_and_zero_allowed(settings):
    settings.CHAT_HASH_QUEUE = 0
    assert checks.check_edge_settings(None) == []
    settings.CHAT_HASH_QUEUE = -1
    assert ids(checks.check_edge_settings(None)) == ["chat.E006"]


def test_gunicorn_refuses_debug_on_an_address_other_machines_reach(database_url):
    """chat.E010 stops the master before it binds: no debug page is ever served in public."""
    import os
    import subprocess
    import sys

    from tests.live import BASE_DIR, free_port

    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_DEBUG": "1",
           "CHAT_BIND": f"0.0.0.0:{free_port()}"}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi"],
                            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "chat.E010" in result.stderr + result.stdout
    assert "Listening at" not in result.stderr + result.stdout
