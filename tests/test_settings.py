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
    # The one silenced: security.W021, HSTS preload off (opt-in, SECURE_HSTS_PRELOAD=1).
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_hsts_preload_is_opt_in():
    assert settings_value("SECURE_HSTS_PRELOAD", **PRODUCTION) == "False"
    assert settings_value("SECURE_HSTS_PRELOAD", SECURE_HSTS_PRELOAD="1", **PRODUCTION) == "True"
    result = manage("check", "--deploy", "--fail-level", "WARNING", SECURE_HSTS_PRELOAD="1",
                    **PRODUCTION)
    assert "System check identified no issues (0 silenced)." in result.stdout, result.stdout


def test_every_database_connection_has_timeouts():
    options = settings_value("DATABASES['default']['OPTIONS']", **PRODUCTION)
    for expected in ("'connect_timeout': 5", "'keepalives': 1", "'keepalives_idle': 10",
                     "'keepalives_interval': 5", "'keepalives_count': 3",
                     "'tcp_user_timeout': 15000", "'options': '-c statement_timeout=30000'"):
        assert expected in options
    options = settings_value("DATABASES['default']['OPTIONS']", CHAT_DB_STATEMENT_TIMEOUT="2.5",
                             CHAT_DB_CONNECT_TIMEOUT="3", **PRODUCTION)
    assert "'options': '-c statement_timeout=2500'" in options and "'connect_timeout': 3" in options
    options = settings_value("DATABASES['default']['OPTIONS']", CHAT_DB_STATEMENT_TIMEOUT="0",
                             **PRODUCTION)
    assert "options'" not in options and "statement_timeout" not in options


def test_debug_with_a_public_bind_is_refused():
    result = manage("check", CHAT_BIND="0.0.0.0:8000", DJANGO_DEBUG="1")
    assert result.returncode != 0
    assert ("(chat.E010) DEBUG is on and CHAT_BIND='0.0.0.0:8000' is not a loopback address."
            in result.stderr)
    assert manage("check", CHAT_BIND="0.0.0.0:8000", **PRODUCTION).returncode == 0


def settings_value(expression, **env):
    result = manage("shell", "--no-imports", "-c",
                    f"from django.conf import settings; print(settings.{expression})", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


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
