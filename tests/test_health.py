"""Health and readiness for load balancers."""
import json
import urllib.error
import urllib.request

from tests.live import free_port


def get(server, path):
    try:
        response = urllib.request.urlopen(server.url + path, timeout=10)
    except urllib.error.HTTPError as error:
        response = error
    return response.status, json.loads(response.read())


def test_healthz_answers(server):
    assert get(server, "/healthz") == (200, {"status": "ok"})


def test_readyz_is_ok_when_the_database_and_broker_are(server):
    assert get(server, "/readyz") == (200, {"status": "ok", "database": "ok", "broker": "ok"})


def test_readyz_says_503_when_the_broker_is_unreachable(start_server):
    lonely = start_server(CHAT_BROKER="redis", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert get(lonely, "/readyz") == (503, {"status": "unavailable", "database": "ok",
                                            "broker": "not subscribed"})
    assert get(lonely, "/healthz") == (200, {"status": "ok"})
