"""Health and readiness for load balancers: every database error is a 503 with the reason."""
import json
import time
import urllib.error
import urllib.request

from django.db import connection

from chat import health
from chat.db import db_work
from tests.live import Gunicorn, free_port
from tests.test_faults import own_postgres  # noqa: F401 (a fixture: a PostgreSQL to stop)


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


def test_a_connection_closed_behind_the_pools_back_makes_the_database_unready(pooled_db):
    with db_work():  # connect the pool's warmest connection, then hand it back
        connection.ensure_connection()
    wrapper = pooled_db.idle.peek()
    wrapper.connection.close()  # as a server or a proxy that ended it would leave it, idle
    assert health.database_state(pooled_db) == "unreachable: connection already closed"
    assert health.database_state(pooled_db) == "ok"  # and the pool replaced it


def test_readyz_says_503_with_the_reason_while_postgres_is_down_then_200(own_postgres, gunicorn_logs):
    own_postgres.manage("migrate", "--noinput", "-v", "0")
    server = Gunicorn(own_postgres.url, gunicorn_logs, CHAT_BROKER="memory").start()
    try:
        assert get(server, "/readyz")[0] == 200
        own_postgres.stop()
        answers = [get(server, "/readyz") for _ in range(3)]  # the broken pooled one, then new ones
        for status, body in answers:
            assert status == 503 and body["status"] == "unavailable", answers
            assert body["database"].startswith("unreachable: "), answers
        own_postgres.start()
        deadline = time.monotonic() + 30
        while get(server, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "not ready 30 s after PostgreSQL came back"
            time.sleep(0.2)
    finally:
        server.stop()
