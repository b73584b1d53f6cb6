"""The socket session logs one key=value line when a socket opens and one when it closes."""
import re
import time

from tests.live import close_code, connect, join, send

OPENED = r"INFO \[\d+\] chat\.sockets: socket opened conn=(?P<conn>\d+-\d+) user={user}\n"
CLOSED = (r"INFO \[\d+\] chat\.sockets: socket closed conn={conn} user={user} rooms={rooms} "
          r"duration=\d+\.\ds code={code}\n")


def wait_for_line(server, pattern, timeout=15):
    """Return the first match of ``pattern`` in the server's log, waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while (match := re.search(pattern, server.log())) is None:
        assert time.monotonic() < deadline, f"no line matching {pattern!r} in:\n{server.log()[-3000:]}"
        time.sleep(0.1)
    return match


def test_open_and_close_are_logged_with_the_connection_id_and_the_peers_code(
        server, make_users, make_room):
    [(user, key)] = make_users(1, prefix="logged")
    rooms = [make_room(), make_room()]
    ws = connect(server, key)
    conn = wait_for_line(server, OPENED.format(user=user))["conn"]
    for room in rooms:
        join(ws, room)
    ws.close(status=4000)
    wait_for_line(server, CLOSED.format(conn=conn, user=user, rooms=2, code=4000))


def test_a_close_by_the_server_is_logged_with_its_code(server, make_users):
    [(user, key)] = make_users(1, prefix="oversized")
    ws = connect(server, key)
    conn = wait_for_line(server, OPENED.format(user=user))["conn"]
    send(ws, type="ping", body="x" * 70_000)  # over CHAT_MAX_MESSAGE_BYTES
    assert close_code(ws) == 1009
    wait_for_line(server, CLOSED.format(conn=conn, user=user, rooms=0, code=1009))


def test_connection_ids_differ_between_sockets(server, make_users):
    users = make_users(3, prefix="distinct")
    clients = [connect(server, key) for _, key in users]
    conns = {wait_for_line(server, OPENED.format(user=user))["conn"] for user, _ in users}
    assert len(conns) == 3
    for ws in clients:
        ws.close()
