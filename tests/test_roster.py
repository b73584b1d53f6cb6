"""Who is in a room, from each worker's roster: batched arrivals on two workers, the list cap in
``joined`` and the ``who`` pages, a user on both workers leaving one of them.

A real gunicorn of two workers with ``CHAT_PRESENCE_LIST_MAX=3``, so that a handful of users
make a "big" room.
"""
import time

import gevent
import pytest

from tests.live import connect, join, receive, receive_type, send, worker_of

CAP = 3


@pytest.fixture(scope="module")
def capped(start_server):
    return start_server(WEB_CONCURRENCY=2, CHAT_PRESENCE_LIST_MAX=CAP, CHAT_PRESENCE_DEBOUNCE=0.3)


def who(ws, room, **fields):
    send(ws, type="who", room=room, ref="w", **fields)
    return receive_type(ws, "who")


def everyone(ws, room):
    """Page through ``who`` to the end; return the usernames."""
    names, after = [], None
    while True:
        page = who(ws, room, **({} if after is None else {"after": after}))
        names += page["users"]
        if not page["more"]:
            return names
        after = page["users"][-1]


def until_counted(ws, room, count, timeout=10):
    """Ask ``who`` until the room counts ``count`` users (events cross workers by the broker)."""
    deadline = time.monotonic() + timeout
    while (page := who(ws, room))["count"] != count:
        assert time.monotonic() < deadline, f"the room counts {page['count']}, not {count}"
        gevent.sleep(0.05)
    return page


def open_on_both_workers(server, users, attempts=10):
    """Connect every user at once; return {pid: [(name, ws)]} once both workers serve some.

    All at once, the worker that wakes first can take them all: then again, after a pause.
    """
    for _ in range(attempts):
        sockets = gevent.joinall([gevent.spawn(connect, server, key) for _, key in users],
                                 timeout=20, raise_error=True)
        by_worker = {}
        for (name, _), job in zip(users, sockets):
            by_worker.setdefault(worker_of(job.value), []).append((name, job.value))
        if len(by_worker) == 2:
            return by_worker
        for job in sockets:
            job.value.close()
        gevent.sleep(0.1)
    pytest.fail(f"{attempts} times every socket landed on one worker")


def test_joins_at_once_on_two_workers_are_all_listed_capped_and_paged(capped, make_users, make_room):
    users = make_users(8, prefix="crowd")
    room = make_room()
    by_worker = open_on_both_workers(capped, users)
    sockets = [ws for placed in by_worker.values() for _, ws in placed]
    joins = [gevent.spawn(join, ws, room) for ws in sockets]  # within one batch window or two
    gevent.joinall(joins, timeout=20, raise_error=True)
    names = sorted(name for name, _ in users)
    for placed in by_worker.values():  # each worker's roster, kept up by the other's events
        until_counted(placed[0][1], room, 8)
        assert everyone(placed[0][1], room) == names

    [(late_name, late_key)] = make_users(1, prefix="late")
    late = connect(capped, late_key)
    joined = join(late, room, ref="j")
    everybody = sorted(names + [late_name])
    assert {k: joined[k] for k in ("presence", "presence_more", "presence_count")} == {
        "presence": everybody[:CAP], "presence_more": True, "presence_count": 9}
    assert who(late, room) == {"type": "who", "room": room, "users": everybody[:CAP],
                               "more": True, "count": 9, "ref": "w"}
    assert who(late, room, after=everybody[2], limit=2) == {
        "type": "who", "room": room, "users": everybody[3:5], "more": True, "count": 9, "ref": "w"}
    assert who(late, room, after=everybody[7]) == {
        "type": "who", "room": room, "users": everybody[8:], "more": False, "count": 9, "ref": "w"}
    assert everyone(late, room) == everybody
    for ws in sockets + [late]:
        ws.close()


def test_who_checks_its_fields_and_needs_the_room_joined(capped, make_users, make_room):
    [(_, key)] = make_users(1, prefix="asker")
    room = make_room()
    ws = connect(capped, key)
    send(ws, type="who", room=room, ref="a")
    assert receive(ws) == {"type": "error", "code": "not_joined", "detail": f"join {room!r} first",
                           "ref": "a"}
    join(ws, room)
    send(ws, type="who", room=room, limit=CAP + 1, ref="b")
    assert receive(ws) == {"type": "error", "code": "bad_request",
                           "detail": f"limit must be a whole number from 1 to {CAP}", "ref": "b"}
    send(ws, type="who", room=room, after=7, ref="c")
    assert receive(ws) == {"type": "error", "code": "bad_request",
                           "detail": "after must be a username (text of 1 to 150 characters)",
                           "ref": "c"}
    ws.close()


def test_a_user_on_both_workers_stays_present_until_their_last_socket_leaves(
        capped, make_users, make_room):
    room = make_room()
    [(name, key)] = make_users(1, prefix="twotabs")
    [(watcher_name, watcher_key)] = make_users(1, prefix="watcher")
    tabs = {}
    for _ in range(40):  # two tabs of one user, one on each worker
        ws = connect(capped, key)
        pid = worker_of(ws)
        if pid in tabs:
            ws.close()
        else:
            tabs[pid] = ws
        if len(tabs) == 2:
            break
    if len(tabs) < 2:
        pytest.skip("every socket landed on one worker")
    watcher = connect(capped, watcher_key)
    join(watcher, room)
    first, second = tabs.values()
    joins = [gevent.spawn(join, ws, room) for ws in (first, second)]
    gevent.joinall(joins, timeout=20, raise_error=True)
    assert receive_type(watcher, "presence") == {"type": "presence", "room": room,
                                                 "joined": [name], "left": []}
    send(first, type="leave", room=room, ref="bye")
    assert receive_type(first, "left")["ref"] == "bye"
    gevent.sleep(1)  # the debounce (0.3 s) passed: the depart ran on that worker
    send(watcher, type="ping", ref="p")
    assert receive(watcher) == {"type": "pong", "ref": "p"}, "announced gone while still here"
    assert until_counted(watcher, room, 2)["users"] == sorted([name, watcher_name])
    second.close()
    assert receive_type(watcher, "presence", timeout=10) == {
        "type": "presence", "room": room, "joined": [], "left": [name]}
    assert until_counted(watcher, room, 1)["users"] == [watcher_name]
    first.close()
    watcher.close()
