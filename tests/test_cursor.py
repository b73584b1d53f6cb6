"""A room's cursor hands each seq on once, in order, and repairs every gap through one read path.

Driven with a fake database (a fake ``fetch``) that counts its reads and lets messages arrive
live while a read is in flight, as they do on a busy hub.
"""
import json

import gevent
import pytest

from chat.cursor import NEWEST, Cursor
from chat.protocol import encode

GAP_WAIT = 0.02


class FakeDatabase:
    """One room's committed messages, read like ``rooms.messages_between``; counts the reads."""

    def __init__(self, last=0):
        self.last = last
        self.reads = []  # (after, upto) of each read
        self.failures = 0  # the next reads that raise
        self.during = []  # callables run while the next read is in flight (live arrivals)

    def __call__(self, room_id, slug, after, upto):
        self.reads.append((after, upto))
        if self.failures:
            self.failures -= 1
            raise OSError("the database is away")
        top = self.last if upto is None else upto
        found = [(seq, message(seq) if seq <= self.last else None) for seq in range(after + 1, top + 1)]
        during, self.during = self.during, []
        for arrive in during:
            arrive()
        return found


def message(seq):
    return {"type": "message", "room": "r", "seq": seq, "body": f"m{seq}"}


def frame(seq):
    """The body the broker carries for ``seq`` (the room builds the frame from it)."""
    return encode(message(seq))


class Recorder:
    """The room's members: records what the cursor hands on."""

    def __init__(self):
        self.got = []

    def __call__(self, seq, frame, published=None):
        self.got.append((seq, frame))

    def seqs(self):
        return [seq for seq, _ in self.got]

    def bodies(self):
        return [json.loads(body)["body"] for _, body in self.got]


@pytest.fixture
def db():
    return FakeDatabase()


@pytest.fixture
def members():
    return Recorder()


@pytest.fixture
def cursor(db, members):
    return Cursor("r", db, members, gap_wait=GAP_WAIT)


def live(cursor, db, *seqs):
    """Commit ``seqs`` and offer them as the broker delivers them."""
    for seq in seqs:
        db.last = max(db.last, seq)
        cursor.offer(seq, frame(seq))


def settle(cursor, timeout=2):
    """Wait until the cursor's reader is done, then a few gap waits more (for any re-read)."""
    with gevent.Timeout(timeout):
        while cursor.reader is not None:
            gevent.sleep(GAP_WAIT / 4)
    gevent.sleep(GAP_WAIT * 5)


def test_seqs_are_handed_on_in_order_once(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    live(cursor, db, 2, 1, 1, 3, 2)
    assert members.seqs() == [1, 2, 3]
    assert cursor.held == {} and db.reads == []


def test_a_gap_is_read_after_gap_wait_and_nothing_stays_held(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last = 3
    live(cursor, db, 1, 3)  # 2 is lost on the way
    assert members.seqs() == [1]
    settle(cursor)
    assert members.seqs() == [1, 2, 3]
    assert members.bodies() == ["m1", "m2", "m3"]
    assert cursor.held == {} and db.reads == [(1, 2)]


def test_a_gap_filled_live_within_gap_wait_is_not_read(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    live(cursor, db, 1, 3)
    live(cursor, db, 2)
    settle(cursor)
    assert members.seqs() == [1, 2, 3]
    assert db.reads == []


def test_a_seq_arriving_live_during_the_repairers_read_leaves_nothing_held(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last = 4
    live(cursor, db, 1, 4)  # 2 and 3 are late
    db.during = [lambda: live(cursor, db, 3)]  # 3 arrives while 2-3 are being read
    settle(cursor)
    assert members.seqs() == [1, 2, 3, 4]
    assert cursor.held == {}
    assert db.reads == [(1, 3)]  # read once, not again every gap_wait (issue 13)
    live(cursor, db, 6)  # the next real gap is repaired too
    settle(cursor)
    assert members.seqs() == [1, 2, 3, 4, 5, 6]
    assert db.reads == [(1, 3), (4, 5)]


def test_a_new_gap_opened_during_the_read_is_repaired_after_it(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last = 3
    live(cursor, db, 1, 3)
    db.during = [lambda: live(cursor, db, 6)]  # 4 and 5 are lost meanwhile
    settle(cursor)
    assert members.seqs() == [1, 2, 3, 4, 5, 6]
    assert cursor.held == {}
    assert db.reads == [(1, 2), (3, 5)]


def test_a_message_sent_by_reference_is_read_at_once(db, members):
    slow = Cursor("r", db, members, gap_wait=10)  # a gap's wait would fail the timeout below
    slow.start_at(room_id=1, seq=0)
    db.last = 2
    slow.want(2)  # the header of seq 2, whose body was too large for the broker
    db.during = [lambda: slow.offer(1, frame(1))]  # 1 arrives live during the read
    settle(slow)
    assert members.seqs() == [1, 2]
    assert members.bodies() == ["m1", "m2"]
    assert slow.held == {} and db.reads == [(0, 2)]


def test_a_message_by_reference_already_handed_on_is_not_read(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    live(cursor, db, 1)
    assert cursor.want(1) is False  # the broker's echo of a message handed on here
    settle(cursor)
    assert db.reads == []


def test_a_resync_reads_all_after_the_cursor_once_whatever_arrives_meanwhile(cursor, db, members):
    cursor.start_at(room_id=1, seq=2)
    db.last = 5
    cursor.want(NEWEST)  # the broker reconnected: 3-5 may have been lost
    db.during = [lambda: live(cursor, db, 4, 6)]  # 6 is committed after the read began
    settle(cursor)
    assert members.seqs() == [3, 4, 5, 6]
    assert cursor.held == {}
    assert db.reads == [(2, None)]


def test_a_resync_asked_during_a_read_reads_again_after_it(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last = 1
    cursor.want(NEWEST)

    def reconnected_again():
        db.last = 2  # committed after the first read's snapshot, its publish lost
        cursor.want(NEWEST)

    db.during = [reconnected_again]
    settle(cursor)
    assert members.seqs() == [1, 2]
    assert db.reads == [(0, None), (1, None)]


def test_a_failed_read_is_retried_with_backoff_then_stops(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last, db.failures = 1, 2
    cursor.want(NEWEST)
    settle(cursor)
    assert members.seqs() == [1]
    assert db.reads == [(0, None)] * 3


def test_a_check_that_finds_the_cursor_behind_waits_for_the_seq_on_its_way(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last = 1
    assert cursor.want(1, now=False) is True
    live(cursor, db, 1)  # its publish was only slow
    settle(cursor)
    assert members.seqs() == [1] and db.reads == []
    db.last = 2  # committed, its publish lost
    assert cursor.want(2, now=False) is True
    settle(cursor)
    assert members.seqs() == [1, 2] and db.reads == [(1, 2)]


def test_what_is_wanted_before_the_join_read_the_room_is_read_once_it_did(cursor, db, members):
    db.last = 3
    cursor.want(3)
    assert cursor.reader is None  # where to start is not known yet
    cursor.start_at(room_id=1, seq=1)
    settle(cursor)
    assert members.seqs() == [2, 3]


def test_a_deleted_message_is_handed_on_as_none(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last = 2
    cursor.want(3)  # 3 is not in the fake database: passed over like a deleted message
    settle(cursor)
    assert members.got[-1] == (3, None)
    assert cursor.next_seq == 4


def test_a_closed_cursor_stops_reading(cursor, db, members):
    cursor.start_at(room_id=1, seq=0)
    db.last = 3
    live(cursor, db, 1, 3)
    cursor.close()
    settle(cursor)
    assert db.reads == []
    assert cursor.want(5) is True and cursor.reader is None
