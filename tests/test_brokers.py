"""The PostgreSQL broker: large events by reference, and nothing lost when LISTEN drops."""
import time

import psycopg2

from tests.live import collect_messages, send


def test_an_event_too_large_for_notify_arrives_by_reference(server, pair_in_room):
    room, a, b = pair_in_room(server, prefix="large")
    body = "\U0001F600" * 4000  # 16 KB of UTF-8: twice what NOTIFY carries
    send(a, type="send", room=room, body=body, ref="big")
    [got] = collect_messages(b, 1)
    assert got["body"] == body and got["ref"] == "big" and got["seq"] == 1
    a.close()
    b.close()


def test_messages_sent_while_the_listener_reconnects_are_caught_up(
        start_server, pair_in_room, database_url):
    instance = start_server(CHAT_BROKER="postgres")
    room, a, b = pair_in_room(instance, prefix="relisten")
    names = [f"chat-listener:{pid}" for pid in instance.worker_pids()]
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = ANY(%s)", [names])
        assert cursor.fetchall() == [(True,)]
    for n in range(5):  # some of these are published while nobody listens
        send(a, type="send", room=room, body=f"during {n}", ref=f"d{n}")
    got = collect_messages(b, 5)
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
    assert [m["body"] for m in got] == [f"during {n}" for n in range(5)]
    deadline = time.monotonic() + 10
    while "listening on chat_events" not in instance.log().split("lost the LISTEN connection")[-1]:
        assert time.monotonic() < deadline, instance.log()
        time.sleep(0.1)
    admin.close()
    a.close()
    b.close()


def test_the_listener_can_use_its_own_database_url(start_server, pair_in_room, database_url):
    """Where DATABASE_URL is PgBouncer (transaction mode), LISTEN goes to PostgreSQL itself."""
    instance = start_server(CHAT_LISTEN_DATABASE_URL=database_url)
    room, a, b = pair_in_room(instance, prefix="listenurl")
    send(a, type="send", room=room, body="via the listener's own URL", ref="u")
    assert collect_messages(b, 1)[0]["body"] == "via the listener's own URL"
    a.close()
    b.close()
