"""The envelope, without a broker: what is encoded, and what a worker refuses and why."""

from __future__ import annotations

import datetime as dt

import msgpack
import pytest
from freezegun import freeze_time

from taskq.errors import EncodeError
from taskq.message import CONTENT_TYPE, InvalidMessage, Reply, TaskMessage, decode_reply, decode_task
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
