"""deploy/nginx.conf in front of two gunicorns, with TLS: the chat as it is deployed.

Debian's nginx runs on unprivileged ports with the shipped site file (ports, certificate and
upstreams replaced), a certificate made here, and CHAT_TRUSTED_PROXIES=127.0.0.1 on both
gunicorns. Clients connect from 127.0.0.2 and 127.0.0.3 (any 127/8 address is local on
Linux), so that the proxy (127.0.0.1) and two clients have three addresses.
"""
import http.client
import http.cookiejar
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websocket

from tests.live import BASE_DIR, Poller, free_port, join, receive, receive_type, send

MAX_FAILURES_PER_ADDRESS = 3
PINGS = 200
START_TIMEOUT = 15


def nginx_binary():
    """Return nginx's path; fail under CI (.ci/run installs it), skip elsewhere."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed: apt-get install nginx (.ci/run does)")
        pytest.skip("nginx is not installed")
    return found


def render_site(upstreams, http_port, https_port, cert, key):
    """Return deploy/nginx.conf with test ports, certificate and upstreams; fail on drift."""
    site = (BASE_DIR / "deploy" / "nginx.conf").read_text()
    replacements = [
        ("    listen [::]:80;\n", ""),
        ("    listen [::]:443 ssl;\n", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("server_name chat.example.com;", "server_name localhost;"),
        ("/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/chat.example.com/privkey.pem", str(key)),
        ("    server 127.0.0.1:8000;\n",
         "".join(f"    server 127.0.0.1:{server.port};\n" for server in upstreams)),
    ]
    for old, new in replacements:
        assert old in site, f"deploy/nginx.conf no longer has {old!r}: update this test"
        site = site.replace(old, new)
    return site


def main_config(tmp, site_path):
    """The main context around the site: in the foreground, every file under ``tmp``."""
    temp_dirs = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers as nobody could not read tmp
    return (f"{user}daemon off;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
            f"error_log {tmp / 'error.log'} info;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log {tmp / 'access.log'};\n{temp_dirs}    include {site_path};\n}}\n")


class Nginx:
    def __init__(self, binary, tmp, upstreams):
        self.tmp, self.port, self.http_port = tmp, free_port(), free_port()
        self.url = f"https://localhost:{self.port}"
        self.ws_url = f"wss://localhost:{self.port}/ws/"
        self.cert, self.key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True, timeout=30)
        site = tmp / "chat.conf"
        site.write_text(render_site(upstreams, self.http_port, self.port, self.cert, self.key))
        (tmp / "nginx.conf").write_text(main_config(tmp, site))
        self.process = subprocess.Popen(
            [binary, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.context = ssl.create_default_context(cafile=str(self.cert))
        self._wait_started()

    def _wait_started(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                get(self, "/healthz")
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nginx did not start in {START_TIMEOUT} s:\n{self.log()}")

    def log(self):
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: lets sockets close
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def upstreams(start_server):
    # Production's HTTPS settings (but the redirect, which the start probe over HTTP would follow).
    env = dict(CHAT_TRUSTED_PROXIES="127.0.0.1", CHAT_METRICS_ALLOWED="127.0.0.1",
               CHAT_LOGIN_MAX_FAILURES_PER_ADDRESS=MAX_FAILURES_PER_ADDRESS,
               SESSION_COOKIE_SECURE=1, CSRF_COOKIE_SECURE=1, SECURE_HSTS_SECONDS=60)
    return [start_server(**env), start_server(**env)]


@pytest.fixture(scope="module")
def proxy(upstreams, tmp_path_factory):
    nginx = Nginx(nginx_binary(), tmp_path_factory.mktemp("nginx"), upstreams)
    yield nginx
    nginx.stop()


class SourceHTTPSHandler(urllib.request.HTTPSHandler):
    """HTTPS from a chosen local address, trusting the test's certificate."""

    def __init__(self, source, context):
        super().__init__(context=context)
        self.source, self.ssl_context = source, context

    def https_open(self, req):
        return self.do_open(http.client.HTTPSConnection, req, context=self.ssl_context,
                            source_address=(self.source, 0))


class Client:
    """A browser at ``source`` talking to the site through nginx: cookies and CSRF tokens."""

    def __init__(self, proxy, source):
        self.proxy, self.jar = proxy, http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  SourceHTTPSHandler(source, proxy.context))

    def get(self, path, headers=()):
        return self.opener.open(urllib.request.Request(self.proxy.url + path, headers=dict(headers)),
                                timeout=30)

    def post_form(self, path, fields, headers=()):
        """POST ``fields`` with the form's CSRF token; return (status, page)."""
        page = self.get(path).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        request = urllib.request.Request(self.proxy.url + path, data=data, headers={
            "Referer": self.proxy.url + path, **dict(headers)})  # HTTPS: Django checks it
        try:
            response = self.opener.open(request, timeout=30)
            return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), None)


def get(proxy, path, source="127.0.0.2", headers=()):
    """GET through nginx from ``source``; return (status, body)."""
    connection = http.client.HTTPSConnection("localhost", proxy.port, timeout=10,
                                             context=proxy.context, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def wss(proxy, key, origin="same"):
    origin = proxy.url if origin == "same" else origin
    return websocket.create_connection(proxy.ws_url, timeout=10, origin=origin,
                                       header={"Cookie": f"sessionid={key}"},
                                       sslopt={"ca_certs": str(proxy.cert)})


def sign_up(proxy, source, name):
    client = Client(proxy, source)
    status, _ = client.post_form("/accounts/signup/", {
        "username": name, "password1": "a sturdy passphrase 7", "password2": "a sturdy passphrase 7"})
    assert status == 200 and client.cookie("sessionid"), "sign-up did not sign the user in"
    return client


def test_sign_up_log_in_and_a_wss_chat_through_nginx(proxy, upstreams, make_room):
    tag = os.getpid()
    sign_up(proxy, "127.0.0.4", f"nginxa{tag}")
    sign_up(proxy, "127.0.0.5", f"nginxb{tag}")
    a, b = Client(proxy, "127.0.0.4"), Client(proxy, "127.0.0.5")
    for client, name in ((a, f"nginxa{tag}"), (b, f"nginxb{tag}")):
        status, page = client.post_form("/accounts/login/", {"username": name,
                                                             "password": "a sturdy passphrase 7"})
        assert status == 200 and name in page  # the redirect to the home page, signed in
    # Django knows the request came over HTTPS: HSTS is sent (SecurityMiddleware: is_secure()).
    assert a.get("/accounts/login/").headers["Strict-Transport-Security"].startswith("max-age=60")
    room = make_room()
    ws_a, ws_b = wss(proxy, a.cookie("sessionid")), wss(proxy, b.cookie("sessionid"))
    try:
        join(ws_a, room)
        join(ws_b, room)
        send(ws_a, type="send", room=room, body="through nginx", ref="n1")
        assert receive_type(ws_b, "message")["body"] == "through nginx"
    finally:
        ws_a.close()
        ws_b.close()
    # The access log names the client, not nginx; and nginx used both gunicorns.
    served = [sum(line.startswith(("127.0.0.4 ", "127.0.0.5 ")) for line in server.log().splitlines())
              for server in upstreams]
    assert all(served), f"requests by the clients' addresses in each gunicorn's log: {served}"


def test_log_ins_are_throttled_by_the_real_client_address(proxy, make_users):
    from django.contrib.auth.hashers import make_password

    [(name, _)] = make_users(1, prefix="nginxok", password=make_password("correct horse 9"))
    guesser, other = Client(proxy, "127.0.0.2"), Client(proxy, "127.0.0.3")
    for n in range(MAX_FAILURES_PER_ADDRESS):
        status, _ = guesser.post_form("/accounts/login/", {"username": f"nobody{n}", "password": "x"})
        assert status == 200, f"failure {n + 1} refused already"
    assert guesser.post_form("/accounts/login/", {"username": name, "password": "correct horse 9"})[0] == 429
    # A forged X-Forwarded-For is kept, but nginx appends the real peer: still the same address.
    forged = {"X-Forwarded-For": "198.51.100.77"}
    assert guesser.post_form("/accounts/login/", {"username": name, "password": "correct horse 9"},
                             headers=forged)[0] == 429
    status, page = other.post_form("/accounts/login/", {"username": name, "password": "correct horse 9"})
    assert status == 200 and other.cookie("sessionid"), "another client behind nginx was throttled too"


def test_metrics_are_refused_through_nginx(proxy, upstreams):
    from chat.scrape import REFUSAL

    assert get(proxy, "/metrics") == (403, REFUSAL)
    # A client on nginx's own host is local indeed (every hop trusted: the left-most).
    assert get(proxy, "/metrics", source="127.0.0.1")[0] == 200
    assert get(proxy, "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}) == (403, REFUSAL)
    direct = urllib.request.urlopen(upstreams[0].url + "/metrics", timeout=10)
    assert direct.status == 200  # nginx's own address may: the proxy is what made the difference


def test_the_origin_check_passes_for_the_proxied_host_only(proxy, make_users):
    [(username, key)] = make_users(1, prefix="nginxorigin")
    ws = wss(proxy, key)
    send(ws, type="whoami")
    assert receive(ws)["user"] == username
    ws.close()
    for origin in ("https://evil.example", f"https://localhost:{proxy.port + 1}", "null"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            wss(proxy, key, origin=origin)
        assert refused.value.status_code == 403, origin


def median_round_trip(ws, count=PINGS):
    """Median seconds from a ping frame sent to its pong received."""
    times = []
    for n in range(count):
        sent = time.perf_counter()
        send(ws, type="ping", ref=f"p{n}")
        assert receive(ws) == {"type": "pong", "ref": f"p{n}"}
        times.append(time.perf_counter() - sent)
    return statistics.median(times)


def test_round_trip_through_tls_and_nginx_against_direct(proxy, upstreams, make_users, measurements):
    [(_, key)] = make_users(1, prefix="nginxrtt")
    through = wss(proxy, key)
    direct = websocket.create_connection(upstreams[0].ws_url, timeout=10,
                                         header={"Cookie": f"sessionid={key}"})
    try:
        median_round_trip(through, 20)  # warm both paths up
        median_round_trip(direct, 20)
        nginx_ms, direct_ms = median_round_trip(through) * 1000, median_round_trip(direct) * 1000
    finally:
        through.close()
        direct.close()
    measurements["nginx: ping->pong median through TLS+nginx / direct to gunicorn, ms"] = (
        round(nginx_ms, 2), round(direct_ms, 2))
    assert nginx_ms < 50 and direct_ms < 50, (nginx_ms, direct_ms)


def test_the_http_transport_through_buffering_nginx_and_two_hosts(proxy, upstreams, make_users, make_room):
    """nginx buffers /http/ (``location /``) and picks a host per request: no stickiness needed."""
    (_, http_key), (_, ws_key) = make_users(2, prefix="nginxpoll")
    room = make_room()
    poller = Poller(proxy, http_key, origin=proxy.url, connect=lambda timeout: http.client.HTTPSConnection(
        "localhost", proxy.port, timeout=timeout, context=proxy.context))
    poller.exchange({"type": "join", "room": room, "ref": "j"})
    ws = wss(proxy, ws_key)
    try:
        join(ws, room)
        bodies, seqs = [], []
        for n in range(6):  # each request may reach either gunicorn: a new stream resumes
            send(ws, type="send", room=room, body=f"to http {n}", ref=f"h{n}")
            deadline = time.monotonic() + 10
            while len(seqs) <= n and time.monotonic() < deadline:
                for event in poller.exchange(wait=True, timeout=15)["events"]:
                    if event["type"] == "joined":  # a new stream on the other host: resumed
                        found = event["messages"]
                    else:
                        found = [event] if event["type"] == "message" else []
                    seqs += [m["seq"] for m in found]
                    bodies += [m["body"] for m in found]
        assert (seqs, bodies) == (list(range(1, 7)), [f"to http {n}" for n in range(6)])
        poller.exchange({"type": "send", "room": room, "body": "to ws", "ref": "w1"})
        heard = [receive_type(ws, "message")["body"] for _ in range(7)]  # its own six first
        assert heard[-1] == "to ws"
    finally:
        ws.close()
