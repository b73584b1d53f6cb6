"""Security defaults: log-in throttling, cookie flags, CSRF on every form (README.md, "Security defaults").

``manage.py check --deploy`` with production settings is tested in tests/test_settings.py.
"""
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.live import BASE_DIR, Browser

PASSWORD = "correct horse 9"
WINDOW = 8  # CHAT_LOGIN_WINDOW of the throttled server, seconds
THROTTLED = "Too many failed log-in attempts. Wait 1 minute and try again."


@pytest.fixture(scope="module")
def password_hash():
    from django.contrib.auth.hashers import make_password

    return make_password(PASSWORD)


@pytest.fixture(scope="module")
def guarded(start_server):
    return start_server(CHAT_LOGIN_WINDOW=WINDOW, CHAT_LOGIN_MAX_FAILURES=3,
                        CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS=6)


def log_in(server, username, password):
    """Post the real login form; return (status, page, browser)."""
    browser = Browser(server)
    try:
        response = browser.login(username, password)
        return response.status, response.read().decode(), browser
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), browser


def test_a_username_is_throttled_after_failures_even_with_the_right_password_until_the_window_passes(
        guarded, make_users, password_hash):
    [(victim, _), (neighbour, _)] = make_users(2, prefix="guess", password=password_hash)
    for _ in range(3):
        status, page, _ = log_in(guarded, victim, "wrong guess")
        assert status == 200 and "Please enter a correct username and password" in page
    started = time.monotonic()
    status, page, browser = log_in(guarded, victim, PASSWORD)
    assert status == 429
    assert THROTTLED in page
    assert browser.cookie("sessionid") is None
    # Only failures count: another user behind the same address logs in.
    status, page, browser = log_in(guarded, neighbour, PASSWORD)
    assert status == 200 and browser.cookie("sessionid") is not None
    time.sleep(max(0, started + WINDOW + 0.5 - time.monotonic()))
    status, page, browser = log_in(guarded, victim, PASSWORD)
    assert status == 200 and browser.cookie("sessionid") is not None, page


def test_an_address_is_throttled_after_failures_for_any_usernames(start_server, make_users,
                                                                  password_hash):
    server = start_server(CHAT_LOGIN_MAX_FAILURES=3, CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS=4)
    users = make_users(3, prefix="spray", password=password_hash)
    for username, _ in users[:2]:  # a password spray: few tries per name, many names
        for _ in range(2):
            assert log_in(server, username, "Winter2026!")[0] == 200
    status, page, _ = log_in(server, users[2][0], PASSWORD)
    assert status == 429 and THROTTLED.replace("1 minute", "5 minutes") in page


def test_the_session_cookie_is_httponly_and_samesite_lax(server, make_users, password_hash):
    [(username, _)] = make_users(1, prefix="cookie", password=password_hash)
    browser = Browser(server)
    page = browser.get("/accounts/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username,
                                   "password": PASSWORD}).encode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(browser.jar))
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(urllib.request.Request(server.url + "/accounts/login/", data=data,
                                           headers={"Referer": server.url + "/accounts/login/"}),
                    timeout=30)
    assert redirect.value.code == 302
    [cookie] = [c for c in redirect.value.headers.get_all("Set-Cookie") if c.startswith("sessionid=")]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
    assert "Secure" not in cookie  # DEBUG (development) serves plain HTTP


def test_production_cookies_are_secure():
    env = {**os.environ, "DJANGO_DEBUG": "0", "SECRET_KEY": "x" * 60,
           "ALLOWED_HOSTS": "chat.example.com", "DATABASE_URL": "postgres://chat@db.example.com/chat"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c",
         "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
         " s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE)"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "True", "True", "Lax"], result.stderr


@pytest.mark.parametrize("path", ["/accounts/login/", "/accounts/signup/", "/accounts/logout/",
                                  "/rooms/new/"])
def test_a_post_without_a_csrf_token_is_refused(server, path):
    data = urllib.parse.urlencode({"username": "x", "password": "y", "name": "z"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + path, data=data, timeout=10)
    assert refused.value.code == 403
    assert "CSRF verification failed" in refused.value.read().decode()


def test_every_form_template_carries_a_csrf_token():
    templates = (BASE_DIR / "chat" / "templates").rglob("*.html")
    for template in templates:
        text = template.read_text()
        for form in re.findall(r"<form\b.*?</form>", text, re.S):
            if 'method="post"' in form:
                assert "{% csrf_token %}" in form, f"{template.name}: a POST form without csrf_token"


SECRET_URLS = {  # each password ends in "-s3cret"
    "DATABASE_URL": "postgres://chat:db-s3cret@db.example.com:5432/chat",
    "REDIS_URL": "redis://:redis-s3cret@cache.example.com:6379/0",
    "CHAT_LISTEN_DATABASE_URL": "postgres://listener:listen-s3cret@pg.example.com/chat",
    "CHAT_SOME_BACKEND": "amqp://queue:amqp-s3cret@mq.example.com/",
}
UPSTREAM = "https://user:header-s3cret@up.example.com/"


def test_debug_pages_never_show_a_password_in_a_url(settings, rf):
    for name, value in SECRET_URLS.items():
        setattr(settings, name, value)
    page = debug_page(rf.get("/boom", HTTP_X_UPSTREAM=UPSTREAM))
    assert "RuntimeError" in page and "DATABASE_URL" in page and "CHAT_SOME_BACKEND" in page
    passwords = re.findall(r"[a-z]+-s3cret", " ".join([*SECRET_URLS.values(), UPSTREAM]))
    assert len(passwords) == 5
    assert [p for p in passwords if p in page] == []
    assert "amqp://queue:********************@mq.example.com/" in page


# The page shows the source lines around each frame: keep the passwords out of these.
def debug_page(request):
    from django.views.debug import ExceptionReporter

    try:
        fail()
    except RuntimeError as error:
        return ExceptionReporter(request, type(error), error, error.__traceback__).get_traceback_html()


def fail():
    raise RuntimeError("boom")


def test_make_clean_keeps_the_embedded_database_and_clean_data_asks(tmp_path):
    (tmp_path / "Makefile").write_bytes((BASE_DIR / "Makefile").read_bytes())
    for folder in (".venv/bin", "var/pgdata/base", "var/other", "staticfiles"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "var" / "pgdata" / "PG_VERSION").write_text("16\n")

    def make(*args, **env):
        return subprocess.run(["make", "-s", *args], cwd=tmp_path, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=30, env={**os.environ, **env})

    assert make("clean").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "var"]
    assert [p.name for p in (tmp_path / "var").iterdir()] == ["pgdata"]
    refused = make("clean-data")
    assert refused.returncode != 0
    assert "clean-data: no terminal to ask; run make clean-data CONFIRM=yes" in refused.stderr
    assert (tmp_path / "var" / "pgdata" / "PG_VERSION").exists()
    assert make("clean-data", CONFIRM="yes").returncode == 0
    assert not (tmp_path / "var" / "pgdata").exists()
