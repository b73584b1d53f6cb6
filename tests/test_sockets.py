"""The socket session's writer: a failure closes the socket with 1011 and is logged once."""
import logging

import gevent

from chat.ratelimit import Budgets
from chat.sockets import SocketSession


class FakeUser:
    pk = 7

    def get_username(self):
        return "ann"


class BrokenWebSocket:
    """Fails every write with an error no socket ever raises."""

    def __init__(self):
        self.closed_with = []
        self.shut = False

    def send_raw(self, frame):
        raise RuntimeError("a bug in a frame")

    def close(self, code, reason=""):
        self.closed_with.append((code, reason))

    def shutdown(self):
        self.shut = True


def test_a_writer_that_fails_closes_its_socket_with_1011_and_logs_once(caplog):
    ws = BrokenWebSocket()
    session = SocketSession(ws, FakeUser(), hub=None, limiter=None, authority=None,
                            session_key="k", budgets=Budgets(), ping_interval=25, idle_timeout=60)
    writer = gevent.spawn(session._write_loop)
    with caplog.at_level(logging.ERROR, logger="chat.sockets"):
        session.send_frame(b"\x81\x02{}")
        writer.join(timeout=2)
    assert writer.dead and writer.successful()
    assert ws.closed_with == [(1011, "server error")] and ws.shut
    assert [r.getMessage() for r in caplog.records] == [
        "writer failed conn=%s user=ann: closing with 1011" % session.conn_id]
    assert session.send_frame(b"later") is False  # nothing is queued for a dead writer
