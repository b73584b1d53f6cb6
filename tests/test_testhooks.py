"""The test hooks bench/socket_cost.py relies on (``CHAT_TEST_HOOKS=1``), on a real gunicorn."""
import os

import pytest

from tests.live import connect, receive_type, send


@pytest.fixture(scope="module")
def server(start_server):
    """A server of this module's own: the hook walks the heap, stalling the hub on purpose."""
    return start_server(CHAT_MAX_BLOCKING_TIME=5)


def test_memory_counts_greenlets_and_objects_and_dumps_a_tracemalloc_snapshot(server, make_users):
    [(_, key)] = make_users(1, prefix="memory")
    ws = connect(server, key)
    send(ws, type="_memory", action="count", ref="c")
    counted = receive_type(ws, "_memory", timeout=30)
    assert counted["ref"] == "c" and counted["sessions"] >= 1
    assert counted["greenlet_runs"]["_handle_and_close_when_done"] >= 1  # the socket's reader
    assert "SocketSession._write_loop" not in counted["greenlet_runs"]  # idle: no writer
    assert counted["greenlets"] == sum(counted["greenlet_runs"].values())
    assert counted["types"]["builtins.dict"] > 0  # the 300 most common types, by count
    send(ws, type="_memory", action="start", frames=5)
    assert "path" not in receive_type(ws, "_memory", timeout=30)
    send(ws, type="_memory", action="snapshot")
    snapshot = receive_type(ws, "_memory", timeout=30)
    try:
        assert snapshot["traced"] > 0 and os.path.getsize(snapshot["path"]) > 0
    finally:
        os.remove(snapshot["path"])
    send(ws, type="_memory", action="stop")
    receive_type(ws, "_memory", timeout=30)
    ws.close()


def test_memory_with_an_unknown_action_is_a_bad_request(server, make_users):
    [(_, key)] = make_users(1, prefix="memory-bad")
    ws = connect(server, key)
    send(ws, type="_memory", action="dump", ref="d")
    assert receive_type(ws, "error") == {"type": "error", "code": "bad_request", "ref": "d",
                                         "detail": "action must be count, start, snapshot or stop"}
    ws.close()
