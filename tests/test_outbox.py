"""The outbox: bounded in frames and in bytes; one frame always fits; a close drops the rest."""
from chat.outbox import Outbox


def test_one_frame_fits_an_empty_outbox_however_large():
    outbox = Outbox(max_frames=10, max_bytes=100)
    assert outbox.put(b"x" * 1000)
    assert not outbox.put(b"y")  # over the bytes now
    assert outbox.take(most_bytes=10_000) == b"x" * 1000
    assert outbox.bytes == 0
    assert outbox.put(b"y")


def test_the_bytes_bound_refuses_the_frame_that_would_pass_it():
    outbox = Outbox(max_frames=10, max_bytes=100)
    assert outbox.put(b"a" * 60)
    assert outbox.put(b"b" * 40)
    assert not outbox.put(b"c")
    assert (len(outbox), outbox.bytes) == (2, 100)


def test_the_frames_bound_still_holds():
    outbox = Outbox(max_frames=2, max_bytes=10_000)
    assert outbox.put(b"1") and outbox.put(b"2")
    assert not outbox.put(b"3")


def test_a_backlog_is_joined_into_one_write_up_to_the_byte_cap():
    outbox = Outbox(max_frames=10, max_bytes=10_000)
    for frame in (b"aa", b"bb", b"cc", b"dd"):
        outbox.put(frame)
    assert outbox.take(most_bytes=6) == b"aabbcc"
    assert outbox.take(most_bytes=6) == b"dd"


def test_a_close_drops_what_is_queued_and_comes_next():
    outbox = Outbox(max_frames=10, max_bytes=10_000)
    outbox.put(b"never sent")
    outbox.close(1013, "too slow")
    assert outbox.take(most_bytes=100) is None
    assert (outbox.closing, outbox.bytes) == ((1013, "too slow"), 0)


def test_what_was_given_back_goes_first_and_counts_again():
    outbox = Outbox(max_frames=10, max_bytes=10_000)
    outbox.put(b"aa")
    outbox.put(b"bb")
    taken = outbox.take(most_bytes=2)
    outbox.put(b"cc")
    outbox.give_back(taken)
    assert outbox.bytes == 6
    assert outbox.take(most_bytes=100) == b"aabbcc"
