"""The socket session's writing: hub callbacks, a writer only for a backlog, failures → 1011."""
import logging

import gevent
import pytest

from chat.ratelimit import Budgets
from chat.shutdown import hint_frame
from chat.session import Membership
from chat.sockets import SocketSession
from tests.live import connect, join, receive_type, send


class FakeUser:
    pk = 7

    def get_username(self):
        return "ann"


class FakeWebSocket:
    """Takes ``room`` bytes at once, then waits; ``broken`` fails every write with a bug."""

    def __init__(self, room=1 << 20, broken=False):
        self.room, self.broken = room, broken
        self.written, self.closed_with = [], []
        self.pending = False
        self.shut = False

    def send_now(self, data):
        if self.broken:
            raise RuntimeError("a bug in a frame")
        if len(data) > self.room:
            return False  # as if the kernel took nothing: the writer gets it
        self.written.append(bytes(data))
        return True

    def send_raw(self, frame):
        if self.broken:
            raise RuntimeError("a bug in a frame")
        self.written.append(bytes(frame))

    def close(self, code, reason=""):
        self.closed_with.append((code, reason))

    def shutdown(self):
        self.shut = True


def session_on(ws):
    return SocketSession(ws, FakeUser(), hub=None, limiter=None, authority=None,
                         session_key="k", budgets=Budgets(), ping_interval=25, idle_timeout=60)


def test_frames_queued_in_one_turn_of_the_loop_go_out_in_one_write_without_a_greenlet():
    ws = FakeWebSocket()
    session = session_on(ws)
    session.send_frame(b"one")
    session.send_frame(b"two")
    assert ws.written == []  # written after this turn, from the hub
    gevent.sleep(0)
    assert ws.written == [b"onetwo"] and session._writer is None


def test_a_backlog_gets_a_writer_until_it_is_gone_then_callbacks_write_again():
    ws = FakeWebSocket(room=4)
    session = session_on(ws)
    session.send_frame(b"too big for now")
    gevent.sleep(0)
    writer = session._writer
    assert writer is not None
    writer.join(timeout=2)
    assert ws.written == [b"too big for now"] and session._writer is None
    session.send_frame(b"ok")
    gevent.sleep(0)
    assert ws.written[-1] == b"ok" and session._writer is None


def test_a_close_goes_out_after_what_was_being_written_and_drops_the_rest():
    ws = FakeWebSocket()
    session = session_on(ws)
    session.send_frame(b"dropped")
    session.close(1013, "too slow")
    gevent.sleep(0)
    session._writer.join(timeout=2)
    assert (ws.written, ws.closed_with) == ([], [(1013, "too slow")])
    assert session.send_frame(b"later") is False


def test_a_farewell_event_goes_out_before_the_close():
    ws = FakeWebSocket()
    session = session_on(ws)
    session.send_frame(b"dropped")
    session.close(1001, "server going away", farewell=hint_frame(1.5))
    gevent.sleep(0)
    session._writer.join(timeout=2)
    assert ws.written == [b'\x81\x20{"type":"reconnect","after":1.5}']  # 32 bytes, text
    assert ws.closed_with == [(1001, "server going away")]


def test_a_sockets_setup_slot_is_freed_once_at_its_first_joined_or_after_the_timeout():
    freed = []
    joined, silent = session_on(FakeWebSocket()), session_on(FakeWebSocket())
    joined.settle_with(lambda: freed.append("joined"), timeout=0.05)
    silent.settle_with(lambda: freed.append("silent"), timeout=0.05)
    joined.rooms["r"] = Membership()  # as subscribe() leaves it; ready() is a join's last step
    joined.ready("r", 1, 0)
    assert freed == ["joined"]
    gevent.sleep(0.1)
    joined.settled()
    assert freed == ["joined", "silent"]


def test_a_write_that_fails_on_the_hub_closes_its_socket_with_1011_and_logs_once(caplog):
    ws = FakeWebSocket(broken=True)
    session = session_on(ws)
    with caplog.at_level(logging.ERROR, logger="chat.sockets"):
        session.send_frame(b"\x81\x02{}")
        gevent.sleep(0)
        session._writer.join(timeout=2)
    assert ws.closed_with == [(1011, "server error")]
    assert [r.getMessage() for r in caplog.records] == [
        "writing failed conn=%s user=ann: closing with 1011" % session.conn_id]
    assert session.send_frame(b"later") is False  # nothing is queued once closing


def test_a_writer_that_fails_closes_its_socket_with_1011_and_logs_once(caplog):
    ws = FakeWebSocket(room=0)
    session = session_on(ws)
    with caplog.at_level(logging.ERROR, logger="chat.sockets"):
        session.send_frame(b"\x81\x02{}")
        gevent.sleep(0)
        ws.broken = True  # the writer's blocking write fails
        session._writer.join(timeout=2)
    assert session._writer.successful()
    assert ws.closed_with == [(1011, "server error")] and ws.shut
    assert [r.getMessage() for r in caplog.records] == [
        "writer failed conn=%s user=ann: closing with 1011" % session.conn_id]
    assert session.send_frame(b"later") is False  # nothing is queued for a dead writer


@pytest.fixture(scope="module")
def one_worker(start_server):
    return start_server(WEB_CONCURRENCY=1)


def census(ws):
    send(ws, type="_census", ref="census")
    return receive_type(ws, "_census", timeout=30)


def test_an_idle_socket_costs_one_greenlet_and_keeps_no_django_request(one_worker, make_users, make_room):
    room = make_room()
    [probe, *keys] = [key for _, key in make_users(31, prefix="idle")]
    probe = connect(one_worker, probe)
    before = census(probe)
    sockets = []
    for key in keys:
        ws = connect(one_worker, key)
        join(ws, room)
        sockets.append(ws)
    gevent.sleep(0.5)  # presence announcements and tallies done
    after = census(probe)
    assert after["sessions"] - before["sessions"] == 30
    assert 30 <= after["greenlets"] - before["greenlets"] <= 32  # its reader: no writer, no keep-alive
    assert after["requests"] == before["requests"] == 0  # not even the census socket's own
