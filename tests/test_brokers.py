"""The brokers: the one listen loop's rules, events over the limits, PostgreSQL's spill table.

The loop's rules are shown on a fake broker subclass (pure logic); PostgreSQL's large events
and channels with a real ``PostgresBroker`` in this process (pytest runs patched, like a
worker); and the whole path against a real gunicorn with two workers.
"""
import json
import logging
import re
import time
from datetime import timedelta

import gevent
import gevent.queue
import psycopg2
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from chat import brokers
from chat.brokers.base import ListeningBroker
from chat.brokers.memory import MemoryBroker
from chat.brokers.postgres import PostgresBroker
from chat.db import db_work
from chat.errors import EventTooLarge
from chat.hub import Hub
from chat.models import EventSpill
from tests.live import (collect_messages, manage, receive_type, send, sockets_on_every_worker)

WAIT = 10  # seconds any wait below may take


def wait_until(condition, timeout=WAIT, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        gevent.sleep(0.01)


# --- the listen loop (chat/brokers/base.py), on a fake broker ---------------------------------

class Clock:
    """A clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeBroker(ListeningBroker):
    """A scripted server: subscribing fails with what ``refusals`` holds, then succeeds;
    each receive returns the next batch put in ``inbox``, or raises it if it is an exception."""

    def __init__(self, clock, refusals=()):
        super().__init__("fake:*", clock=clock, sleep=self.wait)
        self.refusals = list(refusals)
        self.inbox = gevent.queue.Queue()
        self.attempts = 0  # tries to subscribe
        self.delays = []  # seconds of backoff the loop asked for, in order
        self.closed = 0

    def wait(self, seconds):
        self.delays.append(seconds)
        gevent.sleep(0)

    def _subscribe(self):
        self.attempts += 1
        if self.refusals:
            raise self.refusals.pop(0)
        return object()

    def _receive(self, subscription):
        batch = self.inbox.get()
        if isinstance(batch, BaseException):
            raise batch
        return batch

    def _close(self, subscription):
        self.closed += 1

    def _send(self, topic, payload):
        self.inbox.put([(topic, payload)])


class Receiver:
    """A hub's ``on_message``: parses like the hub, records, and raises on demand."""

    def __init__(self):
        self.got = []
        self.catch_ups = 0

    def __call__(self, topic, payload):
        if payload == b"boom":
            raise RuntimeError("the hub tripped")
        json.loads(payload.partition(b"\n")[0])  # the header: ValueError on garbage, as Hub.receive
        self.got.append((topic, payload))

    def reconnected(self):
        self.catch_ups += 1


def started(broker):
    receiver = Receiver()
    broker.start(receiver, receiver.reconnected)
    assert broker.connected.wait(WAIT)
    return receiver


def lines(caplog, level=logging.DEBUG):
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == __name__ and r.levelno >= level]


def test_a_flood_of_bad_payloads_is_logged_once_then_counted_every_minute(caplog):
    caplog.set_level(logging.INFO, logger=__name__)
    clock = Clock()
    broker = FakeBroker(clock)
    receiver = started(broker)
    try:
        broker.inbox.put([("r", b"garbage")] * 500 + [("r", b"{}")])
        wait_until(lambda: receiver.got, what="the good payload's delivery")
        clock.now += 61
        broker.inbox.put([])  # any wake-up of the loop logs the count once the minute is over
        broker.publish("r", b"[1]")
        wait_until(lambda: len(receiver.got) == 2)
        assert receiver.got == [("r", b"{}"), ("r", b"[1]")]
        assert lines(caplog) == [
            ("INFO", "listening on fake:*"),
            ("WARNING", "skipped a bad payload on r (JSONDecodeError: Expecting value: line 1 "
                        "column 1 (char 0)): b'garbage'; more like it are counted every 60.0 s"),
            ("WARNING", "skipped 499 x bad payload (JSONDecodeError) in the last 61 s"),
        ]
        assert broker.listener and not broker.listener.dead
    finally:
        broker.stop()


def test_an_error_of_the_hub_never_ends_the_loop_and_is_logged_once_with_its_traceback(caplog):
    caplog.set_level(logging.INFO, logger=__name__)
    broker = FakeBroker(Clock())
    receiver = started(broker)
    try:
        for _ in range(3):
            broker.publish("r", b"boom")
        broker.publish("r", b"{}")
        wait_until(lambda: receiver.got)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors] == [
            "skipped a hub error on r (RuntimeError: the hub tripped): b'boom'; "
            "more like it are counted every 60.0 s"]
        assert errors[0].exc_info[0] is RuntimeError
        assert broker.connected.is_set() and broker.attempts == 1  # never resubscribed
    finally:
        broker.stop()


def test_failed_subscriptions_are_retried_with_backoff_logging_each_change_of_state_once(caplog):
    caplog.set_level(logging.DEBUG, logger=__name__)
    refusals = [ConnectionRefusedError("refused")] * 4
    broker = FakeBroker(Clock(), refusals)
    receiver = started(broker)
    try:
        assert broker.delays == [0.1, 0.5, 1, 2]
        assert lines(caplog) == [
            ("WARNING", "cannot listen on fake:* (refused); retrying with backoff"),
            ("DEBUG", "listening on fake:* failed again (refused)"),
            ("DEBUG", "listening on fake:* failed again (refused)"),
            ("DEBUG", "listening on fake:* failed again (refused)"),
            ("INFO", "listening on fake:* again; catching up from the database"),
        ]
        wait_until(lambda: receiver.catch_ups == 1, what="the catch-up")
    finally:
        broker.stop()


def test_a_subscription_that_drops_at_once_keeps_its_backoff_one_that_held_resets_it(caplog):
    caplog.set_level(logging.INFO, logger=__name__)
    clock = Clock()
    broker = FakeBroker(clock)
    receiver = started(broker)
    try:
        for n in range(2, 8):  # dropped as soon as made: 0.1, 0.5, 1, 2, 5, 5 s
            broker.inbox.put(ConnectionResetError("reset"))
            wait_until(lambda: broker.attempts == n and broker.connected.is_set())
        clock.now += broker.stable_after  # this one held: the next retry is the first delay
        broker.inbox.put(ConnectionResetError("reset"))
        wait_until(lambda: broker.attempts == 8 and broker.connected.is_set())
        assert broker.delays == [0.1, 0.5, 1, 2, 5, 5, 0.1]
        assert lines(caplog).count(("WARNING", "lost the subscription to fake:* (reset); reconnecting")) == 7
        assert broker.closed == 7 and receiver.catch_ups == 8
    finally:
        broker.stop()


def test_an_unexpected_error_of_the_broker_is_logged_with_its_traceback_and_it_listens_again(caplog):
    caplog.set_level(logging.INFO, logger=__name__)
    broker = FakeBroker(Clock())
    receiver = started(broker)
    try:
        broker.inbox.put(KeyError("surprise"))
        wait_until(lambda: broker.attempts == 2 and broker.connected.is_set())
        broker.publish("r", b"{}")
        wait_until(lambda: receiver.got == [("r", b"{}")])
        [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert error.getMessage() == "lost the subscription to fake:* ('surprise'); reconnecting"
        assert error.exc_info[0] is KeyError
    finally:
        broker.stop()


def test_an_event_over_the_maximum_is_refused_whole_by_every_broker():
    got = []
    broker = MemoryBroker(max_bytes=10)
    broker.start(lambda topic, payload: got.append(payload))
    broker.publish("r", b"x" * 10)
    with pytest.raises(EventTooLarge) as refused:
        broker.publish("r", b"x" * 11)
    assert str(refused.value) == ("the event is 11 bytes, over the maximum of 10 bytes "
                                  "(CHAT_EVENT_MAX_BYTES)")
    assert got == [b"x" * 10]
    assert FakeBroker(Clock()).max_bytes == MemoryBroker().max_bytes == 1048576


def test_the_maximum_and_the_channel_come_from_the_settings(settings):
    settings.CHAT_EVENT_MAX_BYTES = 2048
    settings.CHAT_BROKER = "postgres"
    assert brokers.from_settings().channel == "chat_events"
    settings.CHAT_BROKER_CHANNEL = "staging_chat"
    broker = brokers.from_settings()
    assert (broker.channel, broker.target, broker.max_bytes) == ("staging_chat", "staging_chat", 2048)
    settings.CHAT_BROKER_CHANNEL = "no spaces"
    with pytest.raises(ImproperlyConfigured, match=re.escape(
            "CHAT_BROKER_CHANNEL='no spaces': use 1 to 63 letters, digits, '_', '-' or '.'.")):
        brokers.from_settings()


# --- PostgreSQL in this process ---------------------------------------------------------------

@pytest.fixture
def pg_broker(pooled_db):
    """Start PostgreSQL brokers on the test database; stop them at the end."""
    started = []

    def start(**options):
        broker = PostgresBroker({**connection.get_connection_params()}, **options)
        receiver = Receiver()
        broker.start(receiver, receiver.reconnected)
        assert broker.connected.wait(WAIT)
        started.append(broker)
        return broker, receiver

    yield start
    for broker in started:
        broker.stop()


def notice(body):
    return Hub.payload({"type": "notice", "body": body})


def test_a_large_event_without_seq_arrives_whole_and_in_order_with_the_small_ones(pg_broker):
    broker, receiver = pg_broker()
    big = [notice("\U0001F600" * 4000 + str(n)) for n in range(3)]  # 16 KB each: twice the limit
    small = [notice(f"small {n}") for n in range(3)]
    for payload in (small[0], big[0], small[1], big[1], big[2], small[2]):
        broker.publish("r", payload)
    broker.publish("other", small[0])
    wait_until(lambda: len(receiver.got) == 7, what="seven deliveries")
    assert [p for t, p in receiver.got if t == "r"] == [small[0], big[0], small[1], big[1], big[2], small[2]]
    assert ("other", small[0]) in receiver.got
    assert broker.waiting == {} and broker.readers == {}


def test_spilled_events_older_than_the_keep_time_are_deleted_by_a_publisher(pg_broker):
    broker, receiver = pg_broker(spill_keep=60)
    with db_work():
        old = EventSpill.objects.create(topic="r", payload=b"old")
        EventSpill.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(minutes=2))
    broker.publish("r", notice("x" * 9000))  # sent by the broker's sender greenlet

    def old_one_gone():
        with db_work():
            return not EventSpill.objects.filter(pk=old.pk).exists()

    wait_until(old_one_gone, what="the old spilled event deleted")
    with db_work():
        assert EventSpill.objects.filter(topic="r").count() >= 1  # the new one stays a while
    wait_until(lambda: receiver.got)
    assert bodies(receiver) == ["x" * 9000]


def test_a_message_too_large_for_notify_still_goes_by_reference(pg_broker):
    broker, receiver = pg_broker()
    with db_work():
        spilled = EventSpill.objects.count()
    broker.publish("r", Hub.payload({"type": "message", "body": "y" * 9000}, seq=7))
    wait_until(lambda: receiver.got)
    [(topic, got)] = receiver.got
    header, _, body = got.partition(b"\n")
    header = json.loads(header)
    assert (topic, header["seq"], header["by_ref"], body) == ("r", 7, True, b"")
    with db_work():
        assert EventSpill.objects.count() == spilled  # the hub reads it from the Message table


def bodies(receiver):
    return [json.loads(payload.partition(b"\n")[2])["body"] for _, payload in receiver.got]


def test_publishes_queued_together_go_out_in_order_in_one_statement(pg_broker):
    broker, receiver = pg_broker()
    statements = []
    notify = broker._notify
    broker._notify = lambda *texts: (statements.append(len(texts)), notify(*texts))
    for n in range(5):  # no yield in between: all five wait for the sender greenlet
        broker.publish("r", notice(f"n{n}"))
    assert statements == []  # the publisher did not wait for the database
    wait_until(lambda: len(receiver.got) == 5, what="five deliveries")
    assert bodies(receiver) == ["n0", "n1", "n2", "n3", "n4"]
    assert statements == [5]


def test_a_failed_notify_is_retried_with_backoff_and_an_event_without_seq_stays_in_its_worker(
        pg_broker, caplog):
    caplog.set_level(logging.INFO, logger="chat.brokers.postgres")
    delays = []
    broker, receiver = pg_broker(sleep=lambda seconds: (delays.append(seconds), gevent.sleep(0)))
    failures = [OSError("the database went away"), OSError("still away")]
    notify = broker._notify

    def failing_notify(*texts):
        if failures:
            raise failures.pop(0)
        notify(*texts)

    broker._notify = failing_notify
    message = Hub.payload({"type": "message", "body": "kept"}, seq=3)
    broker.publish("r", message)
    broker.publish("r", notice("typing, say"))
    wait_until(lambda: len(receiver.got) == 2, what="both events")
    gevent.sleep(0.2)  # a second copy of either would have arrived by now
    # The notice was handed to this worker's hub at the first failure; the message was sent again.
    assert receiver.got[1] == ("r", message)
    assert bodies(receiver) == ["typing, say", "kept"]
    assert delays == [0.1, 0.5]
    assert [r.getMessage() for r in caplog.records if "publish" in r.getMessage()] == [
        "publishing on chat_events failed (the database went away); retrying with backoff",
        "published again what had failed"]


def test_a_broker_never_started_sends_in_the_caller_and_raises_what_failed(pg_broker):
    listening, receiver = pg_broker()
    script = PostgresBroker({**connection.get_connection_params()})  # as chat/publish.py's
    script.publish("r", notice("from a script"))
    assert script.sender is None and not script.outgoing
    wait_until(lambda: receiver.got)
    assert bodies(receiver) == ["from a script"]
    script._notify = lambda *texts: (_ for _ in ()).throw(OSError("refused"))
    with pytest.raises(OSError, match="refused"):
        script.publish("r", notice("lost"))


def test_brokers_on_different_channels_do_not_hear_each_other(pg_broker):
    default, heard_default = pg_broker()
    staging, heard_staging = pg_broker(channel="staging_chat")
    default.publish("r", notice("to production"))
    staging.publish("r", notice("to staging"))
    wait_until(lambda: heard_default.got and heard_staging.got)
    gevent.sleep(0.2)  # anything crossing over would have arrived by now
    assert bodies(heard_default) == ["to production"]
    assert bodies(heard_staging) == ["to staging"]


def test_a_bad_spill_reference_is_skipped_and_logged_once(pg_broker, caplog):
    caplog.set_level(logging.INFO, logger="chat.brokers.postgres")
    broker, receiver = pg_broker(spill_keep=60)
    with db_work(), connection.cursor() as cursor:
        for text in ("r\nspill:abc", "r\nspill:abc", "r\nspill:999999999"):
            cursor.execute("SELECT pg_notify('chat_events', %s)", [text])
    broker.publish("r", notice("after"))
    wait_until(lambda: receiver.got, what="the event after the bad references")
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert skipped == [
        "skipped a bad payload on chat_events (ValueError: invalid literal for int() with base 10: "
        "'abc'): 'r\\nspill:abc'; more like it are counted every 60.0 s",
        "skipped a spilled event that could not be read on r (LookupError: spilled event 999999999 "
        "is gone (kept 60 s)); more like it are counted every 60.0 s"]


# --- live: large messages, a lost LISTEN, the listener's own URL ----------------------------

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
    deadline = time.monotonic() + WAIT
    with admin.cursor() as cursor:  # the listener connects in the background: wait for it
        while True:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = ANY(%s)", [names])
            terminated = cursor.fetchall()
            if terminated or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert terminated == [(True,)]
    for n in range(5):  # some of these are published while nobody listens
        send(a, type="send", room=room, body=f"during {n}", ref=f"d{n}")
    got = collect_messages(b, 5)
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
    assert [m["body"] for m in got] == [f"during {n}" for n in range(5)]
    deadline = time.monotonic() + 10
    lost = "lost the subscription to chat_events"
    while "listening on chat_events again" not in instance.log().split(lost)[-1]:
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


# --- live: a real gunicorn with two workers on the PostgreSQL broker --------------------------

ANNOUNCED = "\u00e9" * 4500 + "x" * 4500  # 9,000 characters, 13,500 bytes of UTF-8
MAX_EVENT_BYTES = 1048576


@pytest.fixture(scope="module")
def two_workers(start_server):
    return start_server(CHAT_BROKER="postgres", WEB_CONCURRENCY=2)


def skipped_lines(server, pid):
    return [line for line in server.log().splitlines() if f"[{pid}]" in line and " skipped " in line]


def test_a_garbage_notify_is_skipped_and_the_next_message_reaches_sockets_on_every_worker(
        two_workers, make_users, make_room, database_url):
    room = make_room()
    sockets = sockets_on_every_worker(two_workers, make_users, room)
    garbage = ["x", "*\nnot json", f"{room}\n" + '{"seq":"one"}\n{}', f"{room}\nspill:abc",
               f'{room}\n{{"v":2,"kind":"from another version"}}'] + ["*\nflood"] * 200
    admin = psycopg2.connect(database_url)
    with admin, admin.cursor() as cursor:  # one transaction: delivered at its commit, in order
        for text in garbage:
            cursor.execute("SELECT pg_notify('chat_events', %s)", [text])
    admin.close()
    assert_garbage_skipped(two_workers, sockets, room)  # 205 payloads skipped


def assert_garbage_skipped(server, sockets, room):
    """A message after the garbage reaches every worker; one log line per kind of garbage."""
    sender, *_ = sockets.values()
    send(sender, type="send", room=room, body="after the garbage", ref="after")
    for ws in sockets.values():
        [got] = collect_messages(ws, 1)
        assert (got["body"], got["seq"]) == ("after the garbage", 1)
    for pid in sockets:
        lines = skipped_lines(server, pid)
        assert sum("(JSONDecodeError: " in line for line in lines) == 1, lines
        assert 1 <= len(lines) <= 3, lines
    assert "Traceback" not in server.log()
    for ws in sockets.values():
        ws.close()


def test_a_9000_character_announcement_arrives_whole_on_every_worker(
        two_workers, make_users, database_url):
    sockets = sockets_on_every_worker(two_workers, make_users)
    logged = len(two_workers.log())
    result = manage(database_url, "announce", ANNOUNCED)
    assert result.returncode == 0, result.stderr
    for ws in sockets.values():
        assert receive_type(ws, "notice") == {"type": "notice", "body": ANNOUNCED}
    assert " WARNING " not in two_workers.log()[logged:]
    for ws in sockets.values():
        ws.close()


def test_an_announcement_over_the_maximum_is_refused_by_the_command(
        two_workers, make_users, database_url):
    sockets = sockets_on_every_worker(two_workers, make_users)
    result = manage(database_url, "announce", "-", stdin="y" * MAX_EVENT_BYTES)  # with its header, over
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if line.startswith("CommandError")]
    size = int(re.fullmatch(r"CommandError: The notice is too large to send: the event is (\d+) "
                            r"bytes, over the maximum of 1048576 bytes \(CHAT_EVENT_MAX_BYTES\)\.",
                            line).group(1))
    assert MAX_EVENT_BYTES < size < MAX_EVENT_BYTES + 100
    for ws in sockets.values():
        send(ws, type="ping", ref="p")
        assert receive_type(ws, "pong") == {"type": "pong", "ref": "p"}  # no notice came first
        ws.close()
