"""Sign the load-test accounts in through the site's real login form, and keep the cookies.

A login costs the server one PBKDF2 check (about 0.35 s of CPU), so the session cookies are
saved to a file and reused by later runs against the same server while they still work.
"""
import http.client
import json
import logging
import re
import time
import urllib.parse
from http.cookies import SimpleCookie

from gevent.pool import Pool

logger = logging.getLogger("loadtest")
TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


class LoginError(Exception):
    pass


def _request(url, method, path, body=None, cookies=None, timeout=60):
    parts = urllib.parse.urlsplit(url)
    conn_class = http.client.HTTPSConnection if parts.scheme in ("https", "wss") else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=timeout)
    headers = {"Referer": urllib.parse.urljoin(url, path)}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urllib.parse.urlencode(body)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        content = response.read()
    finally:
        conn.close()
    jar = dict(cookies or {})
    for header in response.headers.get_all("Set-Cookie") or ():
        jar.update({name: morsel.value for name, morsel in SimpleCookie(header).items()})
    return response.status, content, jar


#: Tries of a log-in the server refused with 503 (its hashing admission), and the wait between.
BUSY_RETRIES = 30
BUSY_WAIT = 1.0


def login(url, username, password, path="/accounts/login/"):
    """Return the cookie header value of a fresh session for ``username``."""
    status, page, jar = _request(url, "GET", path)
    match = TOKEN.search(page)
    if status != 200 or not match:
        raise LoginError(f"GET {path} answered {status} without a login form: is --url right?")
    form = {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1).decode()}
    for _ in range(BUSY_RETRIES):  # 503: every hashing slot is taken; come back shortly
        status, page, jar = _request(url, "POST", path, body=form, cookies=jar)
        if status != 503:
            break
        time.sleep(BUSY_WAIT)
    if status == 429:
        raise LoginError(f"{username}: login throttled (429); wait, or check --password")
    if status != 302 or "sessionid" not in jar:
        raise LoginError(f"{username}: the login form answered {status}: wrong --password, or run "
                         f"`manage.py create_load_users` on the server first")
    return cookie_header(jar)


def cookie_header(jar):
    """Return the Cookie header value to keep: the session, and the CSRF cookie when there is one.

    The HTTP transport sends the CSRF cookie's value in X-CSRFToken; the WebSocket ignores it."""
    return "; ".join(f"{name}={jar[name]}" for name in ("sessionid", "csrftoken") if name in jar)


def parse_cookie(header):
    """Return {name: value} of a Cookie header value."""
    pairs = (part.strip().partition("=") for part in header.split(";") if part.strip())
    return {name: value for name, _, value in pairs}


def login_all(url, usernames, password, cache_path=None, concurrency=8):
    """Return {username: cookie}, signing in only those without a cached session."""
    cache = _load(cache_path)
    known = cache.setdefault(url, {})
    cached = [name for name in usernames if name in known]
    for name, fresh in zip(cached, Pool(concurrency).imap(lambda n: still_valid(url, known[n]), cached)):
        if fresh is None:
            del known[name]
        else:
            known[name] = fresh
    missing = [name for name in usernames if name not in known]
    if missing:
        logger.info("signing %d accounts in through the login form (%d cached)",
                    len(missing), len(usernames) - len(missing))
        pool = Pool(concurrency)
        for name, cookie in zip(missing, pool.imap(lambda n: login(url, n, password), missing)):
            known[name] = cookie
    _save(cache_path, cache)  # refreshed cookies too (a CSRF cookie added)
    return {name: known[name] for name in usernames}


def still_valid(url, cookie, path="/"):
    """Return a saved session's cookie if the server still accepts it (a page behind the login
    answers 200), with the CSRF cookie that page sets when the saved one had none; else None."""
    status, _, jar = _request(url, "GET", path, cookies=parse_cookie(cookie))
    return cookie_header(jar) if status == 200 else None


def _load(path):
    if not path:
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _save(path, cache):
    if path:
        with open(path, "w") as f:
            json.dump(cache, f)

