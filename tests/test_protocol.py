"""Parsing and validating client frames."""
import datetime
import json

import pytest

from chat import protocol
from chat.errors import BadRequest


def parse_error(text):
    with pytest.raises(BadRequest) as raised:
        protocol.parse(text)
    return raised.value


def nested(depth):
    return '{"type":"ping","x":' + "[" * depth + "]" * depth + "}"


def test_ten_thousand_brackets_are_a_bad_request_not_a_crash():
    assert parse_error("[" * 10000).detail == "the frame is nested too deeply"
    assert parse_error(nested(10000)).detail == "the frame is nested too deeply"


def test_nesting_up_to_the_limit_is_accepted(settings):
    settings.CHAT_MAX_JSON_DEPTH = 16
    assert protocol.parse(nested(15)).type == "ping"
    assert parse_error(nested(16)).detail == "the frame is nested too deeply"


def test_many_flat_brackets_are_not_deep():
    flat = json.dumps({"type": "ping", "x": [[] for _ in range(1000)]})
    assert protocol.parse(flat).type == "ping"


def test_errors_of_a_frame_carry_its_ref_but_a_bad_ref_carries_none():
    assert parse_error('{"ref":"r1"}').ref == "r1"
    assert parse_error('{"type":"ping","ref":""}').ref is None


@pytest.mark.parametrize("value, expected", [(None, 7), (0, 0), (5, 5)])
def test_optional_integers(value, expected):
    frame = protocol.Frame("history", None, {"before": value})
    assert frame.integer("before", default=7) == expected


@pytest.mark.parametrize("value", [-1, True, 1.5, "3", [], 101])
def test_integers_out_of_range_are_refused(value):
    frame = protocol.Frame("history", "r", {"limit": value})
    with pytest.raises(BadRequest, match="limit must be a whole number from 1 to 100"):
        frame.integer("limit", default=50, minimum=1, maximum=100)


def test_body_counts_code_points_not_bytes():
    frame = protocol.Frame("send", "r", {"body": "\U0001F600" * 4000})
    assert len(frame.body()) == 4000


def test_message_event_times_end_in_z():
    class Stored:
        id, seq, ref, body = 7, 3, "r", "hi"
        created = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.timezone.utc)

    assert protocol.message_event(Stored, "lobby", "ann") == {
        "type": "message", "ref": "r", "room": "lobby", "seq": 3, "id": 7, "user": "ann",
        "body": "hi", "ts": "2026-01-02T03:04:05.600000Z"}


def test_a_lone_surrogate_ref_is_a_bad_request():
    assert parse_error('{"type":"ping","ref":"\\ud800"}').detail == (
        "ref must be text without NUL characters or lone surrogates")


@pytest.mark.parametrize("body", ["nul\x00", "sur\ud800"])
def test_bodies_postgresql_cannot_store_are_bad_requests(body):
    frame = protocol.Frame("send", "r", {"body": body})
    with pytest.raises(BadRequest, match="body must be Unicode text without NUL characters or lone surrogates"):
        frame.body()


def test_events_with_lone_surrogates_are_still_encoded():
    assert protocol.encode({"type": "error", "detail": "\ud800"}) == b'{"type":"error","detail":"\\ud800"}'
