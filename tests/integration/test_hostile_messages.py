"""No message can crash-loop a worker: hostile bodies and headers, published raw to a real
``taskq worker``, each end in ``<queue>.dead`` with a reason, and the same children live on.

Messages are published one at a time and each dead letter is taken off ``.dead`` before
the next is sent, so a case that kills a child (or is never settled) names itself.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import amqp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection

from taskq.message import CONTENT_TYPE, MAX_ATTEMPTS
from tests.support.brokers import queue_state
from tests.support.waiting import wait_until

APP = "tests.support.apps_hostile:app"
FAILS = "hostile.fails"  # raises on every run, never retried
RETRIED = "hostile.retried_once"  # raises on every run, retried once at once

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]

GOOD_BODY = msgpack.packb({"args": [], "kwargs": {}})
DROP = object()  # a header value meaning "leave the header out"


def good_headers(**changes: Any) -> dict[str, Any]:
    headers: dict[str, Any] = {"task": FAILS, "id": uuid.uuid4().hex, "attempts": 0}
    headers.update(changes)
    return {key: value for key, value in headers.items() if value is not DROP}


def publish_raw(connection: Connection, queue: str, body: bytes | str, headers: Any, *,
                content_type: str = CONTENT_TYPE, content_encoding: str = "binary", **properties: Any) -> None:
    """Straight onto the channel (py-amqp, or the embedded transport): no taskq code on the way."""
    channel = connection.default_channel
    message = channel.prepare_message(body, None, content_type, content_encoding, headers, properties)
    channel.basic_publish(message, exchange="", routing_key=queue)


def take_dead_letter(connection: Connection, queue: str, what: str) -> Any:
    channel = connection.default_channel
    return wait_until(lambda: channel.basic_get(queue + ".dead", no_ack=True), timeout=30,
                      what=f"the dead letter of {what}")


def dead_reason(message: Any) -> str:
    """Our reason header, or, for a message the worker could only reject, the broker's x-death reason."""
    headers = message.headers or {}
    if "reason" in headers:
        return headers["reason"]
    return "broker:" + headers.get("x-death", [{}])[0].get("reason", "?")


EIGHT_MIB = 8 * 1024 * 1024

CASES = [
    # (what, body, headers, expected reason)
    ("an empty body", b"", good_headers(), "undecodable-body"),
    ("8 MiB that are not msgpack", b"\xc1" * EIGHT_MIB, good_headers(), "undecodable-body"),
    ("8 MiB of msgpack of the wrong shape", msgpack.packb({"args": "x" * EIGHT_MIB}), good_headers(), "malformed-body"),
    ("a body that is not msgpack", b"\xc1 not msgpack", good_headers(), "undecodable-body"),
    ("msgpack that is a list", msgpack.packb([1, 2]), good_headers(), "malformed-body"),
    ("msgpack that is a string", msgpack.packb("args"), good_headers(), "malformed-body"),
    ("kwargs that are a list", msgpack.packb({"args": [], "kwargs": []}), good_headers(), "malformed-body"),
    ("no headers at all", GOOD_BODY, None, "missing-task-name"),
    ("a task name that is a number", GOOD_BODY, good_headers(task=123), "invalid-header"),
    ("a task name that is a table", GOOD_BODY, good_headers(task={"a": 1}), "invalid-header"),
    ("an id that is a number", GOOD_BODY, good_headers(id=123), "invalid-header"),
    ("an id that is a list", GOOD_BODY, good_headers(id=["a"]), "invalid-header"),
    ("an id of 10,000 characters", GOOD_BODY, good_headers(id="x" * 10_000), "invalid-header"),
    ("attempts = 2**63 - 1", GOOD_BODY, good_headers(attempts=2**63 - 1), "invalid-header"),
    ("attempts past the bound", GOOD_BODY, good_headers(attempts=MAX_ATTEMPTS + 1), "invalid-header"),
    ("attempts = -1", GOOD_BODY, good_headers(attempts=-1), "invalid-header"),
    ("attempts = -2**63", GOOD_BODY, good_headers(attempts=-(2**63)), "invalid-header"),
    ("attempts as a string", GOOD_BODY, good_headers(attempts="1"), "invalid-header"),
    ("attempts as a float", GOOD_BODY, good_headers(attempts=1.5), "invalid-header"),
    ("attempts as a boolean", GOOD_BODY, good_headers(attempts=True), "invalid-header"),
    ("eta = 'x'", GOOD_BODY, good_headers(eta="x"), "invalid-header"),
    ("eta as a boolean", GOOD_BODY, good_headers(eta=True), "invalid-header"),
    ("expires_at = 'x'", GOOD_BODY, good_headers(expires_at="x"), "invalid-header"),
    # Valid envelopes whose run fails: the copies made from them must still encode.
    ("the highest valid attempts", GOOD_BODY, good_headers(attempts=MAX_ATTEMPTS), "failed"),
    ("the highest valid attempts, retried", GOOD_BODY, good_headers(task=RETRIED, attempts=MAX_ATTEMPTS), "retries-exhausted"),
    ("a foreign header of 2**63 - 1", GOOD_BODY, good_headers(extra=2**63 - 1), "failed"),
]


# RabbitMQ can't hold a non-finite double: its channel process crashes on the publish and
# closes the publisher's connection (INTERNAL_ERROR), so these reach a worker only through
# the embedded broker (JSON carries Infinity and NaN).
NON_FINITE = [
    ("eta = inf", GOOD_BODY, good_headers(eta=math.inf), "invalid-header"),
    ("eta = -inf", GOOD_BODY, good_headers(eta=-math.inf), "invalid-header"),
    ("eta = nan", GOOD_BODY, good_headers(eta=math.nan), "invalid-header"),
    ("expires_at = inf", GOOD_BODY, good_headers(expires_at=math.inf), "invalid-header"),
    ("expires_at = nan", GOOD_BODY, good_headers(expires_at=math.nan), "invalid-header"),
]


def send_each_and_check(connection: Connection, worker: Any, queue: str, cases: list) -> None:
    children = sorted(worker.child_pids())
    assert children, "the worker has no children"
    wrong = []
    for what, body, headers, reason, *encoding in cases:
        publish_raw(connection, queue, body, headers, **({"content_encoding": encoding[0]} if encoding else {}))
        got = dead_reason(take_dead_letter(connection, queue, what))
        if got != reason:
            wrong.append(f"{what}: {got!r}, expected {reason!r}")
    assert not wrong, "\n".join(wrong)
    assert sorted(worker.child_pids()) == children, f"children were replaced:\n{worker.log()[-3000:]}"
    assert queue_state(connection, queue) == (0, 1)


def test_each_hostile_message_is_dead_lettered_with_its_reason_and_no_child_dies(queue_name, start_worker, broker_url):
    worker = start_worker([queue_name], app=APP)
    with Connection(broker_url) as connection:
        # py-amqp hands a zero-length body to the consumer as the str '': sent both ways.
        cases = [*CASES, ("an empty str body", "", good_headers(), "undecodable-body", "utf-8")]
        if connection.transport.driver_type != "amqp":
            cases += NON_FINITE
        send_each_and_check(connection, worker, queue_name, cases)


@pytest.mark.rabbitmq_only("the embedded broker carries non-finite numbers to the worker, tested above")
def test_rabbitmq_refuses_a_non_finite_header_at_publish(queue_name, start_worker, broker_url):
    worker = start_worker([queue_name], app=APP)
    children = sorted(worker.child_pids())
    for what, body, headers, _, in NON_FINITE:
        with Connection(broker_url) as connection:
            with pytest.raises(connection.connection_errors):
                publish_raw(connection, queue_name, body, headers)
                connection.default_channel.queue_declare(queue_name, passive=True)  # a round trip, to hear the close
    with Connection(broker_url) as connection:
        assert queue_state(connection, queue_name) == (0, 1)
        assert queue_state(connection, queue_name + ".dead") == (0, 0)
    assert sorted(worker.child_pids()) == children


@pytest.mark.rabbitmq_only("the embedded broker's JSON can't carry a bytes key: its publish raises")
def test_a_header_key_that_is_not_utf8_is_dead_lettered(queue_name, start_worker, broker_url):
    """py-amqp hands a key it can't decode over as bytes; the copies must still be made."""
    worker = start_worker([queue_name], app=APP)
    with Connection(broker_url) as connection:
        send_each_and_check(connection, worker, queue_name, [
            ("a bytes header key, invalid", GOOD_BODY, {**good_headers(attempts="x"), b"\xff\xfe": 1}, "invalid-header"),
            ("a bytes header key, run", GOOD_BODY, {**good_headers(), b"\xff\xfe": 1}, "failed"),
        ])


def padding_to_fill_a_frame(headers: dict) -> int:
    """How many characters a header can take before the message's properties fill one frame
    (131072 bytes, RabbitMQ's default frame_max, less the frame's 8 and content header's 12)."""
    properties = amqp.Message(GOOD_BODY, content_type=CONTENT_TYPE, content_encoding="binary",
                              application_headers=headers)._serialize_properties()
    return 131072 - 8 - 12 - len(properties)


def test_a_dead_letter_too_large_for_a_frame_is_rejected_into_dead_letters_by_the_broker(
        queue_name, start_worker, broker_url):
    """Headers that just fit one frame: a copy with the worker's own headers added would not,
    and RabbitMQ would close the connection (FRAME_ERROR), so the message would come back
    for ever. The worker rejects it instead; the broker moves it, headers intact."""
    worker = start_worker([queue_name], app=APP)
    children = sorted(worker.child_pids())
    with Connection(broker_url) as connection:
        pad = "x" * padding_to_fill_a_frame(good_headers(pad=""))
        publish_raw(connection, queue_name, GOOD_BODY, good_headers(pad=pad))
        dead = take_dead_letter(connection, queue_name, "a message whose headers fill a frame")
        embedded = connection.transport.driver_type != "amqp"  # no frames, no limit: a plain dead letter
        assert dead_reason(dead) == ("failed" if embedded else "broker:rejected")
        assert dead.headers["pad"] == pad
        assert queue_state(connection, queue_name) == (0, 1)
    assert sorted(worker.child_pids()) == children


@pytest.mark.parametrize("headers", [[1, 2], "task", 5])
def test_headers_that_are_not_a_table_are_refused_at_publish(headers, queue_name, start_worker, broker_url):
    """Like py-amqp for RabbitMQ, the embedded broker refuses them: stored, they would crash
    kombu's Message in every consumer (so decode_task's own check is a unit test)."""
    worker = start_worker([queue_name], app=APP)
    children = sorted(worker.child_pids())
    with Connection(broker_url) as connection:
        with pytest.raises((TypeError, AttributeError)):
            publish_raw(connection, queue_name, GOOD_BODY, headers)
    with Connection(broker_url) as connection:
        assert queue_state(connection, queue_name) == (0, 1)
    assert sorted(worker.child_pids()) == children


# -- property-based: random bodies and headers -------------------------------------------------

FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)  # see NON_FINITE
HEADER_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | FINITE_FLOATS | st.text(max_size=50)
    | st.binary(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
    max_leaves=10,
)
# Every message must end in .dead: a valid one runs a task that fails (never a future eta,
# which would send it on a trip through the delay cascade).
TASK_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "task": st.sampled_from([FAILS, RETRIED, "no.such.task", ""]) | HEADER_VALUES,
        "id": st.text(max_size=300) | HEADER_VALUES,
        "attempts": st.integers(-(2**63), 2**63 - 1) | HEADER_VALUES,
        "eta": st.floats(max_value=1_000_000, allow_nan=False, allow_infinity=False) | st.text(max_size=5) | st.none(),
        "expires_at": FINITE_FLOATS | HEADER_VALUES,
    },
)
HEADERS = st.builds(lambda own, extra: {**extra, **own}, TASK_HEADERS,
                    st.dictionaries(st.text(min_size=1, max_size=20), HEADER_VALUES, max_size=5))
BODIES = st.binary(max_size=2000) | st.builds(
    lambda value: msgpack.packb(value),
    st.recursive(st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["args", "kwargs", "x"]), inner),
                 max_leaves=6),
)
KNOWN_REASONS = {"undecodable-body", "malformed-body", "missing-task-name", "missing-task-id", "invalid-header",
                 "unknown-task", "expired", "failed", "retries-exhausted"}


def test_random_bodies_and_headers_all_end_in_dead_letters_and_no_child_dies(queue_name, start_worker, broker_url):
    worker = start_worker([queue_name], app=APP)
    children = sorted(worker.child_pids())
    with Connection(broker_url) as connection:

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(body=BODIES, headers=HEADERS)
        def each_lands_in_dead(body: bytes, headers: dict) -> None:
            publish_raw(connection, queue_name, body, headers)
            reason = dead_reason(take_dead_letter(connection, queue_name, f"{body!r} with {headers!r}"))
            assert reason in KNOWN_REASONS, (reason, body, headers)

        each_lands_in_dead()
    assert sorted(worker.child_pids()) == children, f"children were replaced:\n{worker.log()[-3000:]}"
