"""Settings come from the environment; production values pass ``check --deploy``."""
import os
import secrets
import subprocess
import sys

from tests.live import BASE_DIR

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(60),
    "ALLOWED_HOSTS": "chat.example.com",
    "DATABASE_URL": "postgres://chat:secret@db.example.com:5432/chat",
}


def manage(*args, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_without_a_secret_key_says_what_to_set():
    result = manage("check", **{**PRODUCTION, "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "Set SECRET_KEY: it is required when DJANGO_DEBUG=0." in result.stderr


def test_a_malformed_boolean_says_what_to_use():
    result = manage("check", DJANGO_DEBUG="maybe")
    assert result.returncode != 0
    assert "DJANGO_DEBUG='maybe': use 1 or 0." in result.stderr


def test_database_url_is_used_as_given():
    result = manage("shell", "--no-imports", "-c", "from django.conf import settings; d = settings.DATABASES['default'];"
                    " print(d['HOST'], d['PORT'], d['NAME'], d['CONN_MAX_AGE'])", **PRODUCTION)
    assert result.stdout.split() == ["db.example.com", "5432", "chat", "0"], result.stderr
