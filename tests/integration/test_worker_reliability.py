"""Retries, dead letters and time limits, with real worker processes on the real broker."""

from __future__ import annotations

import json
import time
import uuid

import msgpack
import pytest

from taskq import TaskError
from tests.support.brokers import queue_state
from tests.support.reliability_fixtures import dead_letters, rapp  # noqa: F401  (rapp is a fixture)
from tests.support.waiting import wait_until

APP = "tests.support.apps_reliability:app"

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def attempt_times(path) -> list[float]:
    return [float(line.split()[2]) for line in path.read_text().splitlines()]


def test_failures_are_retried_with_backoff_then_succeed(rapp, queue_name, start_worker, tmp_path, amqp):
    from tests.support.apps_reliability import flaky

    start_worker([queue_name], app=APP)
    log = tmp_path / "attempts"
    # get() sees only the final outcome: a reply for a failed attempt would raise here.
    assert flaky.apply_async((str(log), 2), queue=queue_name).get(timeout=20) == "ok"
    times = attempt_times(log)
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 0.2 <= gaps[0] < 0.6 and 0.4 <= gaps[1] < 0.8, gaps  # retry_backoff=0.2, doubling
    assert queue_state(amqp, queue_name) == (0, 1)
    assert queue_state(amqp, queue_name + ".dead")[0] == 0


def test_exhausted_retries_fail_the_caller_and_land_in_dead_letters(rapp, queue_name, start_worker, tmp_path, broker_url):
    from tests.support.apps_reliability import always_fails

    start_worker([queue_name], app=APP)
    log = tmp_path / "attempts"
    result = always_fails.apply_async((str(log),), queue=queue_name)
    with pytest.raises(TaskError) as failure:
        result.get(timeout=20)
    assert failure.value.exc_type == "ValueError" and "broken for good" in str(failure.value)
    assert log.read_text().count("attempt") == 3  # 1 + max_retries=2
    [dead] = wait_until(lambda: dead_letters(broker_url, queue_name), what="a dead letter")
    headers = dead.headers
    assert headers["reason"] == "retries-exhausted"
    assert headers["exc_type"] == "ValueError" and headers["exc_message"] == "broken for good"
    assert "Traceback" in headers["traceback"] and "always_fails" in headers["traceback"]
    assert headers["original_queue"] == queue_name
    assert headers["attempts"] == 3
    assert headers["id"] == result.id and headers["task"] == always_fails.name
    assert msgpack.unpackb(dead.body)["args"] == [str(log)]  # the very message, replayable
    assert not any(key.startswith("x-death") for key in headers)


def test_a_failed_task_logs_one_error_record_carrying_its_traceback(rapp, queue_name, start_worker, tmp_path):
    from tests.support.apps_reliability import always_fails

    worker = start_worker([queue_name], app=APP)
    result = always_fails.apply_async((str(tmp_path / "attempts"), "KeyError"), queue=queue_name)
    with pytest.raises(TaskError):
        result.get(timeout=20)

    def records_with_a_traceback() -> list[dict]:
        records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
        return [record for record in records if "Traceback" in json.dumps(record)]

    [record] = wait_until(records_with_a_traceback, what="a log record with the traceback")
    assert (record["level"], record["event"], record["task_id"]) == ("error", "task failed", result.id)
    assert "in always_fails" in record["exception"] and "KeyError: 'broken for good'" in record["exception"]


def test_an_exception_outside_retry_for_is_not_retried(rapp, queue_name, start_worker, tmp_path, broker_url):
    from tests.support.apps_reliability import always_fails

    start_worker([queue_name], app=APP)
    log = tmp_path / "attempts"
    with pytest.raises(TaskError, match="KeyError"):
        always_fails.apply_async((str(log), "KeyError"), queue=queue_name).get(timeout=20)
    assert log.read_text().count("attempt") == 1
    [dead] = wait_until(lambda: dead_letters(broker_url, queue_name), what="a dead letter")
    assert dead.headers["reason"] == "failed" and dead.headers["attempts"] == 1


def test_explicit_retry_reruns_the_same_task_id(rapp, queue_name, start_worker, tmp_path):
    from tests.support.apps_reliability import asks_to_retry

    start_worker([queue_name], app=APP)
    log = tmp_path / "attempts"
    assert asks_to_retry.apply_async((str(log), 2), queue=queue_name).get(timeout=20) == 3
    # Exhausted: reports the exception the Retry was raised from.
    with pytest.raises(TaskError, match="ConnectionError: service busy"):
        asks_to_retry.apply_async((str(tmp_path / "again"), 99), queue=queue_name).get(timeout=20)
    assert (tmp_path / "again").read_text().count("attempt") == 4  # 1 + the default explicit limit of 3


def test_soft_time_limit_raises_inside_the_task(rapp, queue_name, start_worker, tmp_path):
    from tests.support.apps_reliability import overruns_softly, record

    worker = start_worker([queue_name], app=APP)
    children = worker.child_pids()
    log = tmp_path / "log"
    started = time.monotonic()
    with pytest.raises(TaskError) as failure:
        overruns_softly.apply_async((str(log),), queue=queue_name).get(timeout=20)
    assert failure.value.exc_type == "taskq.errors.SoftTimeLimitExceeded"
    assert 0.5 <= time.monotonic() - started < 3
    assert log.read_text() == "cleaned up\n"  # the task caught it and cleaned up
    # The same child goes on: a soft limit costs no process.
    assert record.apply_async((str(log), "next"), queue=queue_name).get(timeout=10) in children


def test_hard_time_limit_fails_the_task_and_replaces_the_child(rapp, queue_name, start_worker, tmp_path, broker_url, amqp):
    from tests.support.apps_reliability import hangs, record

    worker = start_worker([queue_name], app=APP)
    [first_child] = worker.child_pids()
    log = tmp_path / "log"
    started = time.monotonic()
    with pytest.raises(TaskError) as failure:
        hangs.apply_async((str(log),), queue=queue_name).get(timeout=20)
    assert failure.value.exc_type == "taskq.errors.TimeLimitExceeded"
    assert "time_limit of 1 s" in str(failure.value)
    assert 1.0 <= time.monotonic() - started < 4
    # Settled, not redelivered: one attempt, the message in .dead, nothing left in the queue.
    new_pid = record.apply_async((str(tmp_path / "r"), "next"), queue=queue_name).get(timeout=20)
    assert new_pid != first_child
    assert log.read_text().count("attempt") == 1
    assert queue_state(amqp, queue_name)[0] == 0
    [dead] = dead_letters(broker_url, queue_name)
    assert dead.headers["reason"] == "failed" and dead.headers["exc_type"] == "taskq.errors.TimeLimitExceeded"
    assert worker.process.poll() is None


def test_hard_time_limit_retries_when_the_policy_says_so(rapp, queue_name, start_worker, tmp_path, broker_url):
    from tests.support.apps_reliability import hangs_then_retries

    start_worker([queue_name], app=APP)
    log = tmp_path / "log"
    with pytest.raises(TaskError, match="TimeLimitExceeded"):
        hangs_then_retries.apply_async((str(log),), queue=queue_name).get(timeout=30)
    attempts = log.read_text().splitlines()
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # two attempts, two child processes
    [dead] = wait_until(lambda: dead_letters(broker_url, queue_name), what="a dead letter")
    assert dead.headers["reason"] == "retries-exhausted" and dead.headers["attempts"] == 2


def test_unknown_and_poison_messages_are_dead_lettered_with_a_reason(rapp, queue_name, start_worker, broker_url, amqp):
    from taskq.message import TaskMessage

    start_worker([queue_name], app=APP)
    unknown = rapp.send(TaskMessage(id=str(uuid.uuid4()), task="no.such.task"), queue=queue_name)
    with pytest.raises(TaskError, match="unknown-task"):
        unknown.get(timeout=10)
    rapp.broker.publish(b"\xc1 not msgpack", routing_key=queue_name, headers={"task": "x", "id": "poison"})
    wait_until(lambda: queue_state(amqp, queue_name + ".dead")[0] == 2, what="two dead letters")
    reasons = sorted(m.headers["reason"] for m in dead_letters(broker_url, queue_name))
    assert reasons == ["undecodable-body", "unknown-task"]


def test_a_task_holding_the_gil_is_killed_by_the_kernel_backstop(rapp, queue_name, start_worker, tmp_path):
    """The main thread can't even run: SIGALRM (default action) ends the child, the message is redelivered."""
    from taskq.worker.limits import BACKSTOP_GRACE
    from tests.support.apps_reliability import hogs_the_gil

    worker = start_worker([queue_name], app=APP)
    log = tmp_path / "attempts"
    hogs_the_gil.apply_async((str(log),), queue=queue_name)
    wait_until(lambda: log.exists() and log.read_text().count("attempt") >= 2, timeout=30, what="a second attempt")
    first, second = [line.split() for line in log.read_text().splitlines()[:2]]
    assert first[1] != second[1]  # a new child
    assert 0.5 + BACKSTOP_GRACE <= float(second[2]) - float(first[2]) < 0.5 + BACKSTOP_GRACE + 4
    assert '"exitcode": -14' in worker.log()  # SIGALRM
    worker.kill()  # on a classic queue it would go round again: see docs/guarantees.md
