"""Prometheus metrics at /metrics: every worker counted, and only for allowed clients."""
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chat.monitor import REPORT_PREFIX
from chat.scrape import REFUSAL, address_allowed, token_matches
from tests.live import close_code, collect_messages, connect, receive, receive_type, send

METRIC_NAMES = {
    "chat_open_sockets", "chat_joins_total", "chat_joins_from_memory_total",
    "chat_messages_received_total",
    "chat_messages_delivered_total", "chat_broadcast_latency_seconds_bucket",
    "chat_broadcast_latency_seconds_count", "chat_broadcast_latency_seconds_sum",
    "chat_send_queue_overflows_total", "chat_rate_limited_total",
    "chat_db_wait_seconds_bucket", "chat_db_wait_seconds_count", "chat_db_wait_seconds_sum",
    "chat_hub_blocks_total",
}
TOKEN = "s3cret-token-for-tests"


def fetch(server, headers=None):
    """GET /metrics; return (status, body text)."""
    request = urllib.request.Request(server.url + "/metrics", headers=headers or {})
    try:
        response = urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        response = error
    return response.status, response.read().decode()


def scrape(server, headers=None):
    """Return {sample name: value} of the chat_ samples (histogram buckets keyed by le)."""
    status, text = fetch(server, headers)
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("chat_"):
                key = sample.name + (f"{{le={sample.labels['le']}}}" if "le" in sample.labels else "")
                samples[key] = sample.value
    return samples


def wait_for(server, name, expected, timeout=15):
    """Scrape until ``name`` has the ``expected`` value; return the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if samples[name] == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


@pytest.fixture(scope="module")
def metered(start_server):
    return start_server(WEB_CONCURRENCY=2)


def sockets_on_both_workers(server, keys, at_least):
    """Open sockets (``at_least`` of them) until both workers serve some; return them."""
    clients, pids = [], set()
    for key in keys:
        ws = connect(server, key)
        send(ws, type="_worker", ref="w")
        pids.add(receive_type(ws, "_worker")["pid"])
        clients.append(ws)
        if len(pids) == 2 and len(clients) >= at_least:
            return clients
        time.sleep(0.02)  # let the other worker's accept loop have a turn
    pytest.fail(f"{len(clients)} sockets reached only {len(pids)} of 2 workers")


def test_metrics_add_up_over_both_workers(metered, make_users, make_room):
    users = make_users(20, prefix="metered")
    room = make_room()
    clients = sockets_on_both_workers(metered, [key for _, key in users], at_least=6)
    for ws in clients:
        send(ws, type="join", room=room)
        receive_type(ws, "joined")
    per_client = 2
    for i, ws in enumerate(clients):
        for n in range(per_client):
            send(ws, type="send", room=room, body=f"hello {n}", ref=f"{i}-{n}")
    sent = len(clients) * per_client
    for ws in clients:
        collect_messages(ws, sent, timeout=30)

    samples = scrape(metered)
    assert {name.split("{")[0] for name in samples} == METRIC_NAMES
    assert samples["chat_open_sockets"] == len(clients)
    assert samples["chat_joins_total"] == len(clients)
    assert samples["chat_messages_received_total"] == sent
    assert samples["chat_messages_delivered_total"] == sent * len(clients)
    # Once per message in each worker (both have members), when handed to its sockets.
    assert samples["chat_broadcast_latency_seconds_count"] == sent * 2
    assert samples["chat_broadcast_latency_seconds_bucket{le=+Inf}"] == sent * 2
    assert 0 < samples["chat_broadcast_latency_seconds_sum"] < sent * 2 * 5
    # Each socket's sign-in, join and sends borrowed a pooled connection.
    assert samples["chat_db_wait_seconds_count"] >= len(clients) * 2 + sent
    for name in ("chat_send_queue_overflows_total", "chat_rate_limited_total", "chat_hub_blocks_total"):
        assert samples[name] == 0, name

    for ws in clients:
        ws.close()
    assert wait_for(metered, "chat_open_sockets", 0)["chat_open_sockets"] == 0


def test_rate_limited_frames_are_counted(metered, make_users, make_room):
    [(_, key)] = make_users(1, prefix="hasty")
    room = make_room()
    before = scrape(metered)
    ws = connect(metered, key)
    send(ws, type="join", room=room)
    receive_type(ws, "joined")
    frames = 30  # more than the burst of 20, faster than 10 a second
    for n in range(frames):
        send(ws, type="send", room=room, body="quick", ref=f"q{n}")
    answers = [receive(ws) for _ in range(frames)]
    refused = [a for a in answers if a["type"] == "error"]
    assert refused and all(a["code"] == "rate_limited" for a in refused)
    after = scrape(metered)
    assert after["chat_rate_limited_total"] - before["chat_rate_limited_total"] == len(refused)
    assert after["chat_messages_received_total"] - before["chat_messages_received_total"] == frames
    ws.close()


@pytest.fixture(scope="module")
def guarded(start_server):
    """A server that serves /metrics to 10.0.0.0/8 (not to this test) and to the token."""
    return start_server(CHAT_METRICS_ALLOWED="10.0.0.0/8", CHAT_METRICS_TOKEN=TOKEN)


def test_loopback_may_scrape_by_default(metered):
    status, text = fetch(metered)
    assert status == 200
    assert "# TYPE chat_open_sockets gauge" in text


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"X-Forwarded-For": "10.1.2.3"},
])
def test_a_client_neither_allowed_nor_holding_the_token_gets_403(guarded, headers):
    assert fetch(guarded, headers) == (403, REFUSAL)


def test_the_token_lets_a_client_from_anywhere_scrape(guarded):
    status, text = fetch(guarded, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert "chat_joins_total 0.0" in text


@pytest.fixture(scope="module")
def cramped(start_server):
    """Tiny send queue and buffers, no practical rate limit."""
    return start_server(CHAT_SEND_QUEUE_SIZE=2, CHAT_SOCKET_SEND_BUFFER=4096,
                        CHAT_RATE_LIMIT=100000, CHAT_RATE_BURST=100000)


def test_a_send_queue_overflow_is_counted(cramped, make_users, make_room):
    (_, stuck_key), (_, sender_key) = make_users(2, prefix="overflow")
    room = make_room()
    stuck = connect(cramped, stuck_key, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    sender = connect(cramped, sender_key)
    for ws in (stuck, sender):
        send(ws, type="join", room=room)
        receive_type(ws, "joined")
    count = 60  # 120 KB: far more than the stuck socket's buffers and two queued frames
    for n in range(count):
        send(sender, type="send", room=room, body="x" * 2000, ref=f"o{n}")
    collect_messages(sender, count, timeout=30)
    assert close_code(stuck, timeout=30) == 1013
    assert scrape(cramped)["chat_send_queue_overflows_total"] == 1
    sender.close()


def test_hub_blocks_are_counted_as_the_monitor_reports_them(cramped, make_users):
    [(_, key)] = make_users(1, prefix="spinner")
    ws = connect(cramped, key)
    send(ws, type="_spin", seconds=1, ref="spin")  # long: the monitor thread may be late on a busy machine
    assert receive_type(ws, "_spun")["ref"] == "spin"
    deadline = time.monotonic() + 15
    while True:
        reports = cramped.log().count(REPORT_PREFIX)
        blocks = scrape(cramped)["chat_hub_blocks_total"]
        if reports >= 1 and blocks == reports or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reports >= 1
    assert blocks == reports
    ws.close()


def test_metrics_work_in_a_single_process(client):
    response = client.get("/metrics")  # Django's test client: REMOTE_ADDR is 127.0.0.1
    assert response.status_code == 200
    assert b"# TYPE chat_messages_delivered_total counter" in response.content


@pytest.mark.parametrize("address, allowed", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("::2", False), ("", False), ("not an address", False),
])
def test_only_addresses_in_the_allowed_networks_may_scrape(address, allowed):
    assert address_allowed(address, ["127.0.0.1/8", "::1"]) is allowed


def test_the_token_must_match_exactly_and_be_set():
    assert token_matches(f"Bearer {TOKEN}", TOKEN)
    assert token_matches(f"bearer {TOKEN}", TOKEN)
    assert not token_matches(f"Bearer {TOKEN}", "")
    assert not token_matches("Bearer ", "")
    assert not token_matches(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not token_matches(TOKEN, TOKEN)
