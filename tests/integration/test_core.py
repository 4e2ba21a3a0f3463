"""Sending, results and bad input, against the real RabbitMQ and a real worker process."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import msgpack
import pika
import pytest

from taskq import App, EncodeError, PublishError, TaskError, TaskqError
from taskq.broker import RetryPolicy
from tests.support import ROOT
from tests.support.apps import add, echo, fail, record, record_quietly, unserializable_result
from tests.support.brokers import queue_state
from tests.support.cli_helpers import rabbitmqctl_rows
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def test_delay_returns_result_and_local_call_still_works(app, queue_name, start_worker):
    start_worker([queue_name])
    assert add.apply_async((2, 3), queue=queue_name).get(timeout=10) == 5
    assert add(2, 3) == 5


def test_apply_async_accepts_priority_and_expires(app, queue_name, start_worker):
    start_worker([queue_name])
    result = add.apply_async(args=(2, 3), kwargs={}, queue=queue_name, priority=5, expires=60)
    assert result.get(timeout=10) == 5


def test_many_outstanding_results_from_many_threads(app, queue_name, start_worker, tmp_path):
    start_worker([queue_name], concurrency=2)
    # The first task is slow, so its reply arrives after the others: out of order.
    slow = record.apply_async((str(tmp_path / "slow"), "slow", 0.5), queue=queue_name)
    results: dict[int, object] = {}

    def caller(n: int) -> None:
        pending = [(i, echo.apply_async((i,), queue=queue_name)) for i in range(n * 10, n * 10 + 10)]
        for i, result in reversed(pending):
            results[i] = result.get(timeout=20)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: i for i in range(40)}
    assert isinstance(slow.get(timeout=20), int)


def test_get_times_out_with_builtin_timeout_error_and_can_be_called_again(app, queue_name, start_worker, tmp_path):
    start_worker([queue_name])
    result = record.apply_async((str(tmp_path / "log"), "t", 1.0), queue=queue_name)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.05)
    assert isinstance(result.get(timeout=20), int)
    assert result.ready()


def test_ready_turns_true_without_anyone_waiting(app, queue_name, start_worker):
    # Nobody calls get(): the reply is collected by ready() itself (or the keeper thread).
    start_worker([queue_name])
    result = add.apply_async((2, 3), queue=queue_name)
    wait_until(result.ready, what="the result to be ready")
    assert result.get(timeout=0) == 5


def test_task_that_raised_raises_task_error_with_remote_traceback(app, queue_name, start_worker):
    start_worker([queue_name])
    with pytest.raises(TaskError) as caught:
        fail.apply_async(("boom",), queue=queue_name).get(timeout=10)
    assert str(caught.value) == "ValueError: boom"
    assert caught.value.exc_type == "ValueError"
    assert 'raise ValueError(message)' in caught.value.remote_traceback
    assert "tests/support/apps.py" in caught.value.remote_traceback


def test_wrong_arguments_fail_the_callers_get(app, queue_name, start_worker):
    start_worker([queue_name])
    with pytest.raises(TaskError, match="TypeError: .*add"):
        add.apply_async((1,), queue=queue_name).get(timeout=10)


def test_unencodable_arguments_and_results(app, queue_name, start_worker):
    with pytest.raises(EncodeError):
        echo.apply_async((object(),), queue=queue_name)
    start_worker([queue_name])
    with pytest.raises(TaskError, match="EncodeError"):
        unserializable_result.apply_async(queue=queue_name).get(timeout=10)


def test_ignore_result_publishes_no_reply_to_nor_correlation_id(app, queue_name, amqp, tmp_path):
    result = record_quietly.apply_async((str(tmp_path / "log"), "q"), queue=queue_name)
    with pytest.raises(TaskqError, match="ignore_result"):
        result.get(timeout=1)
    message = amqp.default_channel.basic_get(queue_name, no_ack=True)
    assert message.headers["id"] == result.id
    assert message.properties["message_id"] == result.id
    assert not message.properties.get("reply_to")
    assert not message.properties.get("correlation_id")


def _pika_connection(broker_url: str) -> pika.BlockingConnection:
    """A second AMQP client on the broker under test (URL-encoded vhost, as pika expects it)."""
    return pika.BlockingConnection(pika.URLParameters(broker_url[:-1] + "%2F" if broker_url.endswith("//") else broker_url))


def _read_one_with_pika(broker_url: str, queue_name: str):
    """Read a message as an independent AMQP client sees it, and leave it on the queue."""
    connection = _pika_connection(broker_url)
    try:
        channel = connection.channel()
        method, properties, body = channel.basic_get(queue_name, auto_ack=False)
        assert method is not None, "queue was empty"
        channel.basic_nack(method.delivery_tag, requeue=True)

        class Seen:
            pass

        seen = Seen()
        seen.properties, seen.body = properties, body
        return seen
    finally:
        connection.close()


@pytest.mark.rabbitmq_only(reason="reads the message with pika, a second AMQP client")
def test_wire_format_as_a_second_amqp_client_sees_it(app, queue_name, broker_url):
    result = add.apply_async((2, 3), kwargs={"unused": None} and {}, queue=queue_name)
    message = _read_one_with_pika(broker_url, queue_name)
    assert message.properties.delivery_mode == 2
    assert message.properties.content_type == "application/x-msgpack"
    assert message.properties.headers["task"] == "tests.support.apps.add"
    assert message.properties.headers["id"] == result.id
    assert message.properties.message_id == result.id
    assert message.properties.correlation_id == result.id  # with reply_to: the RPC pair
    assert message.properties.reply_to.startswith("taskq.reply.")
    assert msgpack.unpackb(message.body) == {"args": [2, 3], "kwargs": {}}
    # The queue is durable: declaring it non-durable is refused by the broker.
    connection = _pika_connection(broker_url)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
            connection.channel().queue_declare(queue_name, durable=False)
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "reason"),
    [
        (b"\xc1 definitely not msgpack", "application/x-msgpack", {"task": "tests.support.apps.add", "id": "x"}, "undecodable-body"),
        (b'{"args": [1, 2]}', "application/json", {"task": "tests.support.apps.add", "id": "x"}, "wrong-content-type"),
        (msgpack.packb({"args": [], "kwargs": {}}), "application/x-msgpack", {"task": "no.such.task", "id": "x"}, "unknown-task"),
    ],
)
def test_bad_messages_are_dead_lettered_with_a_reason_and_the_worker_carries_on(
    app, queue_name, start_worker, amqp, body, content_type, headers, reason
):
    worker = start_worker([queue_name])
    amqp.Producer().publish(
        body, routing_key=queue_name, headers=headers, content_type=content_type,
        content_encoding="binary", delivery_mode=2,
    )
    wait_until(lambda: queue_state(amqp, queue_name + ".dead")[0] == 1, what="a dead letter")
    dead = amqp.default_channel.basic_get(queue_name + ".dead", no_ack=True)
    assert dead.body == body
    assert dead.headers["reason"] == reason
    assert dead.headers["original_queue"] == queue_name
    assert dead.properties["delivery_mode"] == 2
    assert add.apply_async((1, 1), queue=queue_name).get(timeout=10) == 2
    assert worker.process.poll() is None
    assert f'"reason": "{reason}"' in worker.log()


def test_publish_to_an_unreachable_broker_raises_publish_error_after_bounded_retry():
    app = App("unreachable", broker="amqp://guest:secret@127.0.0.1:1//")
    app.broker.retry = RetryPolicy(max_retries=2, interval_start=0.01, interval_max=0.01)
    with pytest.raises(PublishError, match="after 3 attempts") as caught:
        app.send_task("x", want_result=False)
    assert "secret" not in str(caught.value)


@pytest.mark.rabbitmq_only(reason="asks rabbitmqctl what the broker sees")
def test_broker_sees_prefetch_one_per_child_and_manual_acks(app, queue_name, other_queue_name, start_worker):
    start_worker([queue_name, other_queue_name], concurrency=2)
    ours = (queue_name, other_queue_name)
    consumers = [row for row in rabbitmqctl_rows("list_consumers", "queue_name", "channel_pid", "ack_required",
                                                 "prefetch_count") if row["queue_name"] in ours]
    assert sorted((row["queue_name"], row["ack_required"], row["prefetch_count"]) for row in consumers) == sorted(
        [(name, True, 1) for name in ours] * 2
    )
    # Per consumer AND per channel: the channel's limit is what stops a child holding one
    # message of each queue (a later per-consumer basic.qos would reset it to 0).
    child_channels = {row["channel_pid"] for row in consumers}
    channels = [row for row in rabbitmqctl_rows("list_channels", "pid", "prefetch_count", "global_prefetch_count")
                if row["pid"] in child_channels]
    assert [(row["prefetch_count"], row["global_prefetch_count"]) for row in channels] == [(1, 1)] * 2


def test_worker_with_unknown_app_prints_one_line_and_exits_2():
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "worker", "-A", "nosuchmodule:app"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["Error: -A 'nosuchmodule:app': no module named 'nosuchmodule'"]


def test_worker_refuses_a_queue_name_topic_routing_would_misread_before_starting_children():
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "worker", "-A", "tests.support.apps:app", "-Q", "orders.*", "-c", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: queue name 'orders.*' has an empty, '*' or '#' word, which topic routing would misread"
    ]


def test_cli_typo_gets_usage_not_traceback():
    done = subprocess.run([sys.executable, "-m", "taskq", "wroker"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "No such command 'wroker'" in done.stderr


def test_banner_shows_app_masked_broker_queues_and_concurrency(broker_url, queue_name, start_worker):
    masked = broker_url.replace("guest:guest@", "guest:**@")
    worker = start_worker([queue_name], concurrency=2)
    log = worker.log()
    assert "app:         tests" in log
    assert f"broker:      {masked}" in log
    assert f"queues:      {queue_name}" in log
    assert "concurrency: 2" in log
    assert "guest:guest" not in log


def test_map_sends_a_burst_with_pipelined_confirms(app, queue_name, start_worker, amqp, tmp_path):
    log = tmp_path / "log"
    quiet = record_quietly.map([(str(log), str(i)) for i in range(2500)], queue=queue_name)
    assert len(quiet) == 2500
    assert queue_state(amqp, queue_name)[0] == 2500  # every one confirmed before map returned
    start_worker([queue_name], concurrency=2)
    results = add.map([(i, i) for i in range(100)], queue=queue_name)
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(100)]
    assert sorted(int(line.split()[1]) for line in log.read_text().splitlines()) == list(range(2500))
