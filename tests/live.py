"""Helpers for tests against a real gunicorn: start it, sign users in, speak the protocol."""
import http.client
import http.cookiejar
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import gevent
import pytest
import websocket

BASE_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """A gunicorn started with the project's own gunicorn.conf.py, logging to a file."""

    def __init__(self, database_url, log_dir, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/"
        self.log_path = Path(log_dir) / f"gunicorn-{self.port}.log"
        # Five pooled connections a worker (not ten): a run starts a dozen servers at once.
        self.env = {**os.environ, "DATABASE_URL": database_url, "CHAT_BIND": f"127.0.0.1:{self.port}",
                    "CHAT_TEST_HOOKS": "1", "CHAT_DB_CONCURRENCY": "5", "WEB_CONCURRENCY": "1",
                    **{k: str(v) for k, v in env.items()}}
        self.process = None

    def start(self):
        log = open(self.log_path, "ab")
        started_at = log.tell()  # a restart appends: look for "ready" in this run's lines only
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi"],
            cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            this_run = self.log_path.read_bytes()[started_at:].decode(errors="replace")
            if "worker " in this_run and " ready" in this_run:
                if self.env["CHAT_BIND"].startswith("unix:"):
                    return self
                try:
                    urllib.request.urlopen(self.url + "/accounts/login/", timeout=2).read()
                    return self
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not start in {START_TIMEOUT} s:\n{self.log()}")

    def stop(self, timeout=15):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode if self.process else None

    def restart(self, while_down=None):
        """Stop with SIGTERM (sockets get 1001), call ``while_down()``, start on the same port.

        The new gunicorn has the same environment, so the same database and address: clients
        that reconnect with backoff find it where the old one was.
        """
        self.stop()
        if while_down is not None:
            while_down()
        return self.start()

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]


def connect(server, session_key=None, origin=None, timeout=10, **options):
    """Open a WebSocket to ``server`` with the session cookie (when given)."""
    headers = {}
    if session_key:
        headers["cookie"] = f"sessionid={session_key}"
    # websocket-client's own UTF-8 check is pure Python (~1 ms per 2 KB frame): skip it, or
    # the test clients, not the server, set the pace.
    options.setdefault("skip_utf8_validation", True)
    ws = websocket.create_connection(server.ws_url, timeout=timeout, origin=origin,
                                     suppress_origin=origin is None, header=headers, **options)
    return ws


def send(ws, **frame):
    ws.send(json.dumps(frame))


def receive(ws, timeout=10):
    """Receive one JSON event, failing after ``timeout`` seconds."""
    ws.settimeout(timeout)
    return json.loads(ws.recv())


def receive_type(ws, kind, timeout=10):
    """Receive events until one of type ``kind`` arrives; return it."""
    deadline = time.monotonic() + timeout
    while True:
        event = receive(ws, max(0.01, deadline - time.monotonic()))
        if event.get("type") == kind:
            return event


def join(ws, room, **fields):
    """Join ``room`` and return the ``joined`` event."""
    send(ws, type="join", room=room, **fields)
    return receive_type(ws, "joined")


def collect_messages(ws, count, timeout=60, arrivals=None, errors=None):
    """Receive events until ``count`` messages arrived (all within ``timeout``); return them.

    With ``arrivals``, append each message's ``(ref, perf_counter())`` on arrival. ``error``
    events go to ``errors`` when given, and fail the test otherwise.
    """
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        event = receive(ws, timeout=max(0.01, deadline - time.monotonic()))
        if event["type"] == "message":
            messages.append(event)
            if arrivals is not None:
                arrivals.append((event["ref"], time.perf_counter()))
        elif event["type"] == "error":
            if errors is None:
                pytest.fail(f"the server answered with an error: {event}")
            errors.append(event)
    return messages


def close_code(ws, timeout=10):
    """Read until the server's close frame; return its status code."""
    return close_reason(ws, timeout)[0]


class Browser:
    """A cookie-keeping HTTP client that signs in through the real login form."""

    def __init__(self, server):
        self.server = server
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path, timeout=10):
        return self.opener.open(self.server.url + path, timeout=timeout)

    def post_form(self, path, fields, token_page=None, timeout=30):
        """POST ``fields`` with the CSRF token of the form on ``token_page`` (default ``path``)."""
        page = self.get(token_page or path).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        request = urllib.request.Request(self.server.url + path, data=data,
                                         headers={"Referer": self.server.url + path})
        return self.opener.open(request, timeout=timeout)

    def login(self, username, password):
        response = self.post_form("/accounts/login/", {"username": username, "password": password})
        return response

    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), None)


def worker_of(ws):
    send(ws, type="_worker")
    return receive_type(ws, "_worker")["pid"]


def clients_on_every_worker(server, keys, workers):
    """Open sockets until each worker serves one; return {pid: (key, ws)} and the rest."""
    placed, extra = {}, []
    for key in keys:
        ws = connect(server, key)
        pid = worker_of(ws)
        if pid in placed:
            extra.append(ws)
        else:
            placed[pid] = (key, ws)
        if len(placed) == workers:
            return placed, extra
        gevent.sleep(0.02)  # let another worker's accept loop have a turn
    pytest.fail(f"{len(keys)} sockets reached only {len(placed)} of {workers} workers")


def sockets_on_every_worker(server, make_users, room=None, attempts=30):
    """Open a socket on each of ``server``'s workers (joined to ``room``); return them by pid.

    Two connections at a time, as in ``on_worker``.
    """
    pids = set(server.worker_pids())
    found = {}
    keys = [key for _, key in make_users(attempts, prefix="everyworker")]
    for first in range(0, len(keys), 2):
        pair = [gevent.spawn(connect, server, key) for key in keys[first:first + 2]]
        gevent.joinall(pair, timeout=10, raise_error=True)
        for ws in (job.value for job in pair):
            pid = worker_of(ws)
            if pid in found:
                ws.close()
                continue
            found[pid] = ws
            if room is not None:
                join(ws, room)
        if set(found) == pids:
            return found
        gevent.sleep(0.05)
    pytest.fail(f"sockets landed on {sorted(found)} only, not on every worker of {sorted(pids)}")


def on_worker(server, key, pid, attempts=20):
    """Connect until a socket lands on worker ``pid`` (so that the broker must carry events).

    Two connections at a time: one by one, the idle worker can win every accept (CI saw 20).
    """
    for _ in range(attempts):
        pair = [gevent.spawn(connect, server, key) for _ in range(2)]
        gevent.joinall(pair, timeout=10, raise_error=True)
        sockets = [job.value for job in pair]
        found = next((ws for ws in sockets if worker_of(ws) == pid), None)
        for ws in sockets:
            if ws is not found:
                ws.close()
        if found is not None:
            return found
        gevent.sleep(0.05)
    pytest.fail(f"no socket landed on worker {pid} in {2 * attempts} attempts")


def sockets_apart(server, first_key, second_key):
    """Open two sockets on different workers: what one causes must cross the broker."""
    first = connect(server, first_key)
    pid = worker_of(first)
    [other] = set(server.worker_pids()) - {pid}
    return first, on_worker(server, second_key, other)


def close_reason(ws, timeout=10):
    """Read until the server's close frame; return its (status code or None, reason)."""
    ws.settimeout(timeout)
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            if len(data) < 2:
                return None, ""
            return int.from_bytes(data[:2], "big"), data[2:].decode()


def post_and_time(browser, path, fields, token_page):
    """POST a form; return when the POST began (not the page read for its CSRF token), and the page."""
    page = browser.get(token_page).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
    request = urllib.request.Request(browser.server.url + path, data=data,
                                     headers={"Referer": browser.server.url + path})
    started = time.monotonic()
    body = browser.opener.open(request, timeout=30).read().decode()
    return started, body


def manage(database_url, *args, stdin=None, **env):
    """Run ``manage.py`` in its own process on ``database_url`` (``CHAT_BROKER=postgres``)."""
    env = {**os.environ, "DATABASE_URL": database_url, "CHAT_BROKER": "postgres", **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


class Poller:
    """A client of the HTTP long-poll transport (docs/protocol.md, section 7): one stream.

    Requests go over one keep-alive connection (so to one worker) unless ``fresh`` asks for a
    new one, which the kernel may hand to any worker. ``rooms`` follows the events applied.
    """

    def __init__(self, server, session_key, client=None, origin=None, connect=None):
        self.server = server
        # A new connection: to the server itself unless given (e.g. HTTPS through nginx).
        self.connect = connect or (lambda timeout: http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=timeout))
        self.session_key = session_key
        self.client = client or uuid.uuid4().hex
        self.origin = origin
        self.csrf = secrets.token_hex(16)  # any 32-character secret: cookie and header agree
        self.stream, self.ack, self.rooms = None, 0, {}
        self.conn = None

    def post(self, body, timeout=40, fresh=False, headers=None):
        """POST ``body`` (a dict, or bytes as is); return (status, headers, parsed JSON or text)."""
        if fresh or self.conn is None:
            if self.conn is not None:
                self.conn.close()
            self.conn = self.connect(timeout)
        self.conn.timeout = timeout
        cookies = f"csrftoken={self.csrf}"
        if self.session_key:
            cookies += f"; sessionid={self.session_key}"
        sent = {"Content-Type": "application/json", "Cookie": cookies, "X-CSRFToken": self.csrf,
                **({"Origin": self.origin} if self.origin else {}), **(headers or {})}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.conn.request("POST", "/http/", body=data, headers=sent)
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
            response = self.conn.getresponse()
            raw = response.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise
        text = raw.decode()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, response, json.loads(text) if is_json else text

    def body(self, frames=(), wait=False, **fields):
        return {"client": self.client, "stream": self.stream, "ack": self.ack,
                "rooms": dict(self.rooms), "frames": list(frames), "wait": wait, **fields}

    def exchange(self, *frames, wait=False, timeout=40, fresh=False, **fields):
        """Send ``frames`` on the stream; apply and return the response (a dict)."""
        status, _, reply = self.post(self.body(frames, wait, **fields), timeout, fresh)
        assert status == 200, (status, reply)
        if not reply.get("superseded"):
            self.apply(reply)
        return reply

    def apply(self, reply):
        self.stream, self.ack = reply["stream"], reply["n"]
        for event in reply["events"]:
            if event["type"] == "joined":
                self.rooms[event["room"]] = event["seq"]
            elif event["type"] == "message":
                self.rooms[event["room"]] = max(self.rooms.get(event["room"], 0), event["seq"])
            elif event["type"] == "left":
                self.rooms.pop(event["room"], None)
        if "close" in reply:
            self.stream, self.ack = None, 0

    def events(self, kind=None, timeout=20):
        """Poll until events arrive (of type ``kind`` when given); return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.exchange(wait=True, timeout=timeout + 5)
            found = [e for e in reply["events"] if kind is None or e["type"] == kind]
            if found:
                return found
        pytest.fail(f"no {kind or 'event'} within {timeout} s")

    def close(self):
        if self.conn is not None:
            self.conn.close()
