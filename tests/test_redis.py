"""The Redis broker: cross-server delivery, large payloads, a Redis restart, a bounded pool.

The tests start their own ``redis-server``s (Debian's) on free ports, never a system service:
one shared by the module, and one for each test that kills or stops it. Under ``CI=true`` a
missing redis-server fails these tests; elsewhere they are skipped. Messages go between two
gunicorns, so they can only arrive through Redis or, after a loss, from the database.
"""
import logging
import os
import re
import shutil
import signal
import subprocess
import time

import gevent
import pytest
import redis
import websocket
from django.core.exceptions import ImproperlyConfigured

from chat import brokers
from chat.brokers.redis import RedisBroker
from tests.live import (close_reason, collect_messages, connect, free_port, join, manage,
                        post_and_time, receive, receive_type, send, sockets_on_every_worker)
from tests.test_brokers import ANNOUNCED, assert_garbage_skipped

START_TIMEOUT = 10


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1 without persistence, logging to a file."""

    def __init__(self, binary, log_dir, *options):
        self.binary = binary
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process = None

    def start(self):
        """Start (again, on the same port) and wait until it answers PING."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *self.options], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with self.client() as client:
                    if client.ping():
                        return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT} s:\n{self.log()}")

    def kill(self):
        """SIGKILL: no goodbye to the clients, as in a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           socket_connect_timeout=5)

    def clients_named(self, name):
        with self.client() as client:
            return [c for c in client.client_list() if c["name"] == name]

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def start_redis(tmp_path_factory):
    """Start redis-servers; stop them all at the end. Fails under CI without the binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        problem = "Debian's redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}: CI must run the Redis broker tests")
        pytest.skip(problem)
    log_dir = tmp_path_factory.mktemp("redis")
    servers = []

    def start(*options):
        server = RedisServer(binary, log_dir, *options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def redis_server(start_redis):
    return start_redis()


@pytest.fixture(scope="module")
def two_servers(start_server, redis_server):
    """Two gunicorns (one worker each) on the shared Redis; no practical rate limit."""
    env = {"CHAT_BROKER": "redis", "REDIS_URL": redis_server.url,
           "CHAT_RATE_LIMIT": 100000, "CHAT_RATE_BURST": 100000}
    return start_server(**env), start_server(**env)


def assert_no_more_messages(ws, quiet=0.5):
    """Nothing but non-message events arrives for ``quiet`` seconds: no duplicates."""
    deadline = time.monotonic() + quiet
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = receive(ws, timeout=left)
        except websocket.WebSocketTimeoutException:
            return
        assert event["type"] != "message", f"a message arrived twice or out of turn: {event}"


def wait_subscribed(redis_server, servers, timeout=10):
    """Wait until every worker of ``servers`` listens (hubs start with their first socket)."""
    names = [f"chat-listen:{pid}" for server in servers for pid in server.worker_pids()]
    deadline = time.monotonic() + timeout
    while not all(any(c["psub"] == "1" for c in redis_server.clients_named(n)) for n in names):
        assert time.monotonic() < deadline, f"not all of {names} subscribed in {timeout} s"
        time.sleep(0.05)


def publish_failed(log, room):
    """Tell whether the hub logged a failed publish to ``room`` (a message's, or another event's)."""
    return re.search(rf"publishing (to )?{re.escape(room)}(#\d+)? failed", log) is not None


def publish_calls(redis_server):
    with redis_server.client() as client:
        return client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0)


def test_two_users_on_two_servers_exchange_messages_in_seq_order_once(
        two_servers, redis_server, pair_in_room):
    one, two = two_servers
    room, a, b = pair_in_room(one, two, prefix="redis-pair")
    wait_subscribed(redis_server, two_servers)
    published = publish_calls(redis_server)
    for n in range(10):  # taking turns: each waits for the other's message
        sender, receiver = (a, b) if n % 2 == 0 else (b, a)
        send(sender, type="send", room=room, body=f"turn {n}", ref=f"t{n}")
        for ws in (receiver, sender):
            [got] = collect_messages(ws, 1)
            assert (got["seq"], got["body"]) == (n + 1, f"turn {n}")
    for n in range(10, 30):  # then both at once
        send(a if n % 2 == 0 else b, type="send", room=room, body=f"burst {n}", ref=f"b{n}")
    for ws in (a, b):
        assert [m["seq"] for m in collect_messages(ws, 20)] == list(range(11, 31))
        assert_no_more_messages(ws)
    assert publish_calls(redis_server) - published >= 30  # they went through Redis
    a.close()
    b.close()


def test_a_large_message_arrives_whole_on_the_other_server(two_servers, redis_server, pair_in_room):
    one, two = two_servers
    room, a, b = pair_in_room(one, two, prefix="redis-large")
    wait_subscribed(redis_server, two_servers)
    published = publish_calls(redis_server)
    body = "\U0001F600" * 4000  # 16 KB of UTF-8, twice what a NOTIFY carries
    send(a, type="send", room=room, body=body, ref="big")
    for ws in (a, b):
        [got] = collect_messages(ws, 1)
        assert got["body"] == body and got["ref"] == "big" and got["seq"] == 1
    assert publish_calls(redis_server) - published >= 1  # whole, through Redis
    a.close()
    b.close()


@pytest.fixture(scope="module")
def two_workers(start_server, redis_server):
    """One gunicorn with two workers on the shared Redis."""
    return start_server(CHAT_BROKER="redis", REDIS_URL=redis_server.url, WEB_CONCURRENCY=2)


def test_garbage_published_to_redis_is_skipped_and_the_next_message_reaches_every_worker(
        two_workers, redis_server, make_users, make_room):
    room = make_room()
    sockets = sockets_on_every_worker(two_workers, make_users, room)
    wait_subscribed(redis_server, [two_workers])
    with redis_server.client() as client:
        for _ in range(200):
            client.publish("chat:*", b"garbage")
        client.publish(f"chat:{room}", b'{"seq":"one"}\n{}')
        client.publish(f"chat:{room}", b"\xff\xfe not UTF-8")
    assert_garbage_skipped(two_workers, sockets, room)  # 202 payloads skipped


def test_a_9000_character_announcement_reaches_every_worker_whole_through_redis(
        two_workers, redis_server, make_users, database_url):
    sockets = sockets_on_every_worker(two_workers, make_users)
    wait_subscribed(redis_server, [two_workers])
    published = publish_calls(redis_server)
    result = manage(database_url, "announce", ANNOUNCED, CHAT_BROKER="redis", REDIS_URL=redis_server.url)
    assert result.returncode == 0, result.stderr
    for ws in sockets.values():
        assert receive_type(ws, "notice") == {"type": "notice", "body": ANNOUNCED}
    assert publish_calls(redis_server) - published >= 1  # whole, through Redis
    for ws in sockets.values():
        ws.close()


def test_an_announcement_over_the_maximum_is_refused_before_it_reaches_redis(
        redis_server, database_url):
    # Other servers of this module publish on the same Redis meanwhile (presence, tallies):
    # listen for the notice itself rather than count every PUBLISH.
    with redis_server.client() as client:
        listener = client.pubsub()
        listener.psubscribe("chat:*")
        result = manage(database_url, "announce", "-", stdin="y" * 1048576, CHAT_BROKER="redis",
                        REDIS_URL=redis_server.url)
        heard = []
        while (message := listener.get_message(timeout=0.5)) is not None:
            heard.append(message)
        listener.close()
    assert result.returncode != 0
    assert re.search(r"CommandError: The notice is too large to send: the event is \d+ bytes, "
                     r"over the maximum of 1048576 bytes \(CHAT_EVENT_MAX_BYTES\)\.", result.stderr)
    assert not [m for m in heard if m["type"] == "pmessage" and b"yyyy" in m["data"]]


def test_messages_sent_while_redis_restarts_reach_the_other_server_once_in_order(
        start_redis, start_server, pair_in_room, measurements):
    own_redis = start_redis()  # this test's own: the others keep theirs running
    one, two = (start_server(CHAT_BROKER="redis", REDIS_URL=own_redis.url) for _ in range(2))
    room, a, b = pair_in_room(one, two, prefix="redis-restart")
    wait_subscribed(own_redis, [one, two])
    send(a, type="send", room=room, body="before", ref="before")
    assert [m["seq"] for m in collect_messages(b, 1)] == [1]
    assert [m["seq"] for m in collect_messages(a, 1)] == [1]

    own_redis.kill()
    errors = []
    started_down = time.monotonic()
    for n in range(5):  # committed to PostgreSQL, then the publish fails
        send(a, type="send", room=room, body=f"down {n}", ref=f"down{n}")
    own = collect_messages(a, 5, errors=errors)  # the sender's own server still delivers them
    assert errors == [], "a failed publish reached the sender as an error"
    assert [m["seq"] for m in own] == [2, 3, 4, 5, 6]
    time.sleep(max(0, started_down + 1.5 - time.monotonic()))  # down long enough to retry twice
    restarted = time.monotonic()
    own_redis.start()  # the same port

    got = collect_messages(b, 5, timeout=20)  # the listener's backoff is at most 5 s
    measurements["redis restart: seconds from restart until the other server caught up"] = round(
        time.monotonic() - restarted, 2)
    assert [m["seq"] for m in got] == [2, 3, 4, 5, 6]
    assert [m["body"] for m in got] == [f"down {n}" for n in range(5)]
    wait_subscribed(own_redis, [one, two])
    send(b, type="send", room=room, body="after", ref="after")
    for ws in (a, b):
        assert [m["seq"] for m in collect_messages(ws, 1)] == [7]
        assert_no_more_messages(ws)
    assert publish_failed(one.log(), room)
    for server in (one, two):
        log = server.log()
        assert log.count("lost the subscription to chat:*") == 1, log
        assert "listening on chat:* at 127.0.0.1:%d/0 again" % own_redis.port in log, log
    a.close()
    b.close()


def test_fifty_sockets_sending_at_once_wait_for_the_pools_few_redis_connections(
        start_redis, start_server, make_users, make_room, measurements):
    pool_size = 4
    own_redis = start_redis("--enable-debug-command", "local")  # for DEBUG SLEEP
    server = start_server(CHAT_BROKER="redis", REDIS_URL=f"{own_redis.url}?max_connections={pool_size}")
    users = make_users(50, prefix="redis-pool")
    room = make_room()
    clients = [connect(server, key) for _, key in users]
    for ws in clients:
        join(ws, room)
    wait_subscribed(own_redis, [server])

    def pause_redis(seconds):
        with own_redis.client() as client:
            client.execute_command("DEBUG", "SLEEP", seconds)

    # Redis pauses for two seconds, so that every publish is in flight at once: 50 messages and
    # 200 typing events. Each needs a connection; all but the pool's few wait for one. (One
    # second was too short on a busy machine: the sends reached the pool one by one.)
    pause = gevent.spawn(pause_redis, 2)
    gevent.sleep(0.1)
    for n, ws in enumerate(clients):
        send(ws, type="send", room=room, body=f"from {n}", ref=f"m{n}")
        for _ in range(4):
            send(ws, type="typing", room=room)
    readers = [gevent.spawn(collect_messages, ws, 50, 30) for ws in clients]
    gevent.joinall(readers + [pause], timeout=40, raise_error=True)
    assert all(r.successful() for r in readers), "not every socket got every message in time"
    for reader in readers:
        assert [m["seq"] for m in reader.value] == list(range(1, 51))

    [pid] = server.worker_pids()
    publishing = own_redis.clients_named(f"chat-publish:{pid}")
    listening = own_redis.clients_named(f"chat-listen:{pid}")
    measurements["redis: connections of one worker, 50 sockets sending while Redis paused"] = (
        f"{len(publishing)} publishing (pool of {pool_size}) + {len(listening)} listening")
    assert len(publishing) == pool_size  # wanted more at once: the pool held them to its size
    assert len(listening) == 1
    assert not publish_failed(server.log(), room)  # they waited; none gave up
    for ws in clients:
        ws.close()


# --- The broker in this process (pytest runs patched, like a worker) ---

def test_the_listener_reconnects_with_backoff_logging_each_change_once(start_redis, caplog):
    caplog.set_level(logging.DEBUG, logger="chat.brokers.redis")
    own_redis = start_redis()
    got, catch_ups = [], []
    broker = RedisBroker(own_redis.url)
    broker.start(lambda topic, payload: got.append((topic, payload)), lambda: catch_ups.append(1))
    try:
        assert broker.connected.wait(10)
        big = os.urandom(1 << 20)  # 1 MiB of any bytes, the maximum: whole, no by-reference
        broker.publish("room-x", big)
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline
            gevent.sleep(0.01)
        assert got == [("room-x", big)]

        own_redis.kill()
        gevent.sleep(2)  # the listener fails a few times: after 0.1, 0.6 and 1.6 s
        with pytest.raises(redis.ConnectionError):
            broker.publish("room-x", b"lost")  # the hub logs it and delivers locally
        own_redis.start()
        deadline = time.monotonic() + 10
        while len(catch_ups) < 2:  # the first subscription counts too
            assert time.monotonic() < deadline, "on_reconnect was not called after Redis came back"
            gevent.sleep(0.05)
        broker.publish("room-y", b"back")
        deadline = time.monotonic() + 10
        while got[-1] != ("room-y", b"back"):
            assert time.monotonic() < deadline
            gevent.sleep(0.01)

        lines = [(r.levelname, r.getMessage()) for r in caplog.records
                 if r.name == "chat.brokers.redis" and r.levelno >= logging.INFO]
        assert [level for level, _ in lines] == ["INFO", "WARNING", "INFO"], lines
        assert lines[1][1].startswith("lost the subscription to chat:* at 127.0.0.1:")
        assert lines[2][1].endswith("again; catching up from the database")
        again = "listening on chat:* at 127.0.0.1:%d/0 failed again" % own_redis.port
        retries = [r for r in caplog.records if r.getMessage().startswith(again)]
        assert len(retries) >= 2  # at debug level only
        assert len(catch_ups) == 2
    finally:
        broker.stop()
    pid = os.getpid()
    assert own_redis.clients_named(f"chat-publish:{pid}") == []
    assert own_redis.clients_named(f"chat-listen:{pid}") == []


def test_a_redis_that_stops_answering_is_noticed_and_rejoined_once_it_answers(start_redis, caplog):
    own_redis = start_redis()
    catch_ups = []
    broker = RedisBroker(own_redis.url, socket_timeout=0.5, poll_timeout=0.3)
    broker.start(lambda topic, payload: None, lambda: catch_ups.append(1))
    try:
        assert broker.connected.wait(10)
        gevent.sleep(1)  # quiet, but answering PING: still subscribed
        assert broker.connected.is_set() and len(catch_ups) == 1
        own_redis.process.send_signal(signal.SIGSTOP)  # the socket stays open; nobody answers
        try:
            deadline = time.monotonic() + 5
            while broker.connected.is_set():
                assert time.monotonic() < deadline, "a silent Redis went unnoticed"
                gevent.sleep(0.05)
            with pytest.raises(redis.TimeoutError):
                broker.publish("room-z", b"nobody answers")  # bounded by socket_timeout
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 15
        while len(catch_ups) < 2:
            assert time.monotonic() < deadline, "not subscribed again after Redis answered"
            gevent.sleep(0.05)
        warnings = [r.getMessage() for r in caplog.records
                    if r.name == "chat.brokers.redis" and r.levelno >= logging.WARNING]
        assert warnings == ["lost the subscription to chat:* at 127.0.0.1:%d/0 (no answer to PING in "
                            "0.3 s); reconnecting" % own_redis.port]
    finally:
        broker.stop()


def test_a_channel_of_its_own_namespaces_the_redis_prefix(redis_server, settings):
    settings.CHAT_BROKER, settings.REDIS_URL = "redis", redis_server.url
    default = brokers.from_settings()
    settings.CHAT_BROKER_CHANNEL = "staging_chat"
    staging = brokers.from_settings()
    assert (default.prefix, staging.prefix) == ("chat:", "staging_chat:")
    heard = {"default": [], "staging": []}
    default.start(lambda topic, payload: heard["default"].append((topic, payload)))
    staging.start(lambda topic, payload: heard["staging"].append((topic, payload)))
    try:
        assert default.connected.wait(10) and staging.connected.wait(10)
        default.publish("r", b"to production")
        staging.publish("r", b"to staging")
        deadline = time.monotonic() + 10
        while not (heard["default"] and heard["staging"]):
            assert time.monotonic() < deadline
            gevent.sleep(0.01)
        gevent.sleep(0.2)  # anything crossing over would have arrived by now
        assert heard == {"default": [("r", b"to production")], "staging": [("r", b"to staging")]}
    finally:
        default.stop()
        staging.stop()


def test_the_redis_broker_needs_redis_url_and_gevents_patches(settings, monkeypatch):
    import patches

    settings.CHAT_BROKER = "redis"
    settings.REDIS_URL = ""
    with pytest.raises(ImproperlyConfigured, match="CHAT_BROKER=redis needs REDIS_URL"):
        brokers.from_settings()
    settings.REDIS_URL = "http://127.0.0.1:1/0"
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL is not a Redis URL"):
        brokers.from_settings()
    monkeypatch.setattr(patches, "is_applied", lambda: False)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(ImproperlyConfigured, match="The redis broker needs gevent's patches"):
        brokers.from_settings()


# --- Known issue, outside the broker ---

def test_the_first_socket_of_a_redis_worker_does_not_block_the_hub(two_servers, make_users):
    from chat.monitor import REPORT_PREFIX

    for server, (_, key) in zip(two_servers, make_users(2, prefix="redis-first")):
        connect(server, key).close()  # builds the hub, if no test did yet
    time.sleep(0.5)  # the monitor reports within a few of its 0.1 s periods
    for server in two_servers:
        assert REPORT_PREFIX not in server.log()


def test_logging_out_on_one_host_closes_that_sessions_sockets_on_the_other(
        two_servers, make_users):
    """Revocation crosses hosts through Redis: the socket and the log-out on different servers."""
    from django.contrib.auth.hashers import make_password

    from tests.live import Browser

    first, second = two_servers
    [(username, _)] = make_users(1, prefix="redisout", password=make_password("pass phrase 1"))
    browser = Browser(first)
    browser.login(username, "pass phrase 1")
    ws = connect(second, browser.cookie("sessionid"))
    send(ws, type="ping", ref="up")
    assert receive_type(ws, "pong")["ref"] == "up"
    started, _ = post_and_time(browser, "/accounts/logout/", {}, token_page="/rooms/")
    assert close_reason(ws, timeout=5) == (4401, "signed out")
    assert time.monotonic() - started < 1.0
