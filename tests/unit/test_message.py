"""The envelope, without a broker: what is encoded, and what a worker refuses and why."""

from __future__ import annotations

import datetime as dt
import math

import msgpack
import pytest
from freezegun import freeze_time

from taskq.errors import EncodeError
from taskq.copies import own_headers
from taskq.message import (
    CONTENT_TYPE,
    MAX_ATTEMPTS,
    InvalidMessage,
    Reply,
    TaskMessage,
    decode_reply,
    decode_task,
    message_body,
)
from taskq.task import expires_at


def test_task_message_round_trips_through_headers_and_msgpack_body():
    sent = TaskMessage(id="t1", task="shop.add", args=(2, 3), kwargs={"z": b"\x00"}, expires_at=123.5, attempts=2)
    received = decode_task(sent.body(), CONTENT_TYPE, sent.headers(), {"reply_to": "r"})
    assert received == TaskMessage(
        id="t1", task="shop.add", args=(2, 3), kwargs={"z": b"\x00"}, reply_to="r", expires_at=123.5, attempts=2
    )
    assert msgpack.unpackb(sent.body()) == {"args": [2, 3], "kwargs": {"z": b"\x00"}}


def test_unencodable_arguments_raise_encode_error_at_send_time():
    with pytest.raises(EncodeError, match="msgpack"):
        TaskMessage(id="t", task="x", args=(object(),)).body()


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "reason"),
    [
        (msgpack.packb({"args": [], "kwargs": {}}), "application/json", {"task": "x", "id": "1"}, "wrong-content-type"),
        (msgpack.packb({"args": [], "kwargs": {}}), CONTENT_TYPE, {"id": "1"}, "missing-task-name"),
        (b"\xc1\xc1 not msgpack", CONTENT_TYPE, {"task": "x", "id": "1"}, "undecodable-body"),
        (msgpack.packb([1, 2]), CONTENT_TYPE, {"task": "x", "id": "1"}, "malformed-body"),
        (msgpack.packb({"args": {}, "kwargs": {}}), CONTENT_TYPE, {"task": "x", "id": "1"}, "malformed-body"),
        (msgpack.packb({"args": [], "kwargs": {}}), CONTENT_TYPE, {"task": "x"}, "missing-task-id"),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(body, content_type, headers, reason):
    with pytest.raises(InvalidMessage) as caught:
        decode_task(body, content_type, headers, {})
    assert caught.value.reason == reason


BODY = msgpack.packb({"args": [], "kwargs": {}})


@pytest.mark.parametrize(
    ("headers", "properties", "complaint"),
    [
        ([1, 2], {}, "headers are a list"),
        ("task", {}, "headers are a str"),
        ({"task": 5, "id": "1"}, {}, "'task' must be a string"),
        ({"task": "x", "id": 5}, {}, "'id' must be a string"),
        ({"task": "x", "id": "x" * 256}, {}, "more than 255"),
        ({"task": "x", "id": "é" * 128}, {}, "256 bytes long"),
        ({"task": "x", "id": "\udcff"}, {}, "not valid UTF-8"),
        ({"task": "x"}, {"message_id": ["not", "a", "string"]}, "'id' must be a string"),
        ({"task": "x", "id": "1", "attempts": -1}, {}, "'attempts' must be 0.."),
        ({"task": "x", "id": "1", "attempts": MAX_ATTEMPTS + 1}, {}, "'attempts' must be 0.."),
        ({"task": "x", "id": "1", "attempts": 2**63 - 1}, {}, "'attempts' must be 0.."),
        ({"task": "x", "id": "1", "attempts": "1"}, {}, "'attempts' must be an integer, not str"),
        ({"task": "x", "id": "1", "attempts": 1.0}, {}, "'attempts' must be an integer, not float"),
        ({"task": "x", "id": "1", "attempts": True}, {}, "'attempts' must be an integer, not bool"),
        ({"task": "x", "id": "1", "eta": "x"}, {}, "'eta' must be epoch seconds, not str"),
        ({"task": "x", "id": "1", "eta": math.inf}, {}, "'eta' must be a finite number"),
        ({"task": "x", "id": "1", "eta": math.nan}, {}, "'eta' must be a finite number"),
        ({"task": "x", "id": "1", "eta": False}, {}, "'eta' must be epoch seconds, not bool"),
        ({"task": "x", "id": "1", "eta": 10**400}, {}, "'eta' is out of range"),
        ({"task": "x", "id": "1", "expires_at": "soon"}, {}, "'expires_at' must be epoch seconds"),
        ({"task": "x", "id": "1", "expires_at": -math.inf}, {}, "'expires_at' must be a finite number"),
        ({"task": "x", "id": "1"}, {"reply_to": 7}, "reply_to property must be a string"),
    ],
)
def test_a_bad_header_is_refused_as_invalid_header_never_guessed(headers, properties, complaint):
    with pytest.raises(InvalidMessage) as caught:
        decode_task(BODY, CONTENT_TYPE, headers, properties)
    assert caught.value.reason == "invalid-header"
    assert complaint in caught.value.detail


def test_headers_at_the_edges_of_their_range_are_accepted():
    received = decode_task(BODY, CONTENT_TYPE, {"task": "x", "id": "i" * 255, "attempts": MAX_ATTEMPTS,
                                                "eta": 2**62, "expires_at": -1}, {})
    assert (received.attempts, received.eta, received.expires_at) == (MAX_ATTEMPTS, float(2**62), -1.0)
    assert decode_task(BODY, CONTENT_TYPE, {"task": "x", "id": "1", "attempts": None}, {}).attempts == 0


def test_kwargs_keys_must_be_strings():
    with pytest.raises(InvalidMessage, match="keys of 'kwargs'") as caught:
        decode_task(msgpack.packb({"args": [], "kwargs": {1: 2}}), CONTENT_TYPE, {"task": "x", "id": "1"}, {})
    assert caught.value.reason == "malformed-body"


@pytest.mark.parametrize("body", [b"", ""])
def test_an_empty_body_is_undecodable_and_becomes_bytes_for_its_dead_letter(body):
    """py-amqp hands a zero-length body over as the str '', which can't be re-published as ``binary``."""
    assert message_body(body) == b"" and message_body(None) == b""
    with pytest.raises(InvalidMessage) as caught:
        decode_task(message_body(body), CONTENT_TYPE, {"task": "x", "id": "1"}, {})
    assert caught.value.reason == "undecodable-body"


def test_copies_keep_headers_they_cannot_read_and_drop_what_is_not_a_table():
    assert own_headers({b"\xff": 1, "x-death": [], "a": 2}) == {b"\xff": 1, "a": 2}
    assert own_headers([1, 2]) == {} and own_headers(None) == {}


def test_replies_round_trip():
    ok = Reply(task_id="t", ok=True, result={"a": [1, 2]})
    assert decode_reply("t", ok.body()) == ok
    failed = Reply(task_id="t", ok=False, exc_type="ValueError", exc_message="bad", traceback="tb")
    assert decode_reply("t", failed.body()) == failed


def test_expiry_in_seconds_is_absolute_from_now():
    with freeze_time("2026-01-01 00:00:00"):
        deadline = expires_at(60)
        message = TaskMessage(id="t", task="x", expires_at=deadline)
        assert not message.is_expired()
    with freeze_time("2026-01-01 00:01:01"):
        assert message.is_expired()


def test_expiry_as_datetime_must_be_aware():
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert expires_at(when) == when.timestamp()
    with pytest.raises(ValueError, match="timezone-aware"):
        expires_at(dt.datetime(2026, 1, 1))
