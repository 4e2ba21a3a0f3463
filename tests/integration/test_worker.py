"""What the worker promises on the wire: redelivery, fair dispatch, graceful stop, heartbeats."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.support.apps import record, record_quietly
from tests.support.brokers import queue_state
from tests.support.cli_helpers import ready_and_unacked
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def lines(path: Path, kind: str) -> list[list[str]]:
    """Rows ``[kind, token, pid, time]`` the record tasks wrote."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.startswith(kind + " ")]


def test_sigkilled_childs_task_is_delivered_again_and_finishes(app, queue_name, start_worker, tmp_path):
    worker = start_worker([queue_name], concurrency=1)
    log = tmp_path / "runs"
    result = record.apply_async((str(log), "victim", 1.0), queue=queue_name)
    first = wait_until(lambda: lines(log, "start"), what="the task to start")
    victim_pid = int(first[0][2])
    assert victim_pid in worker.child_pids()
    os.kill(victim_pid, signal.SIGKILL)

    second_pid = result.get(timeout=30)  # the replacement child ran it
    assert second_pid != victim_pid
    assert [row[1:3] for row in lines(log, "start")] == [["victim", str(victim_pid)], ["victim", str(second_pid)]]
    assert [row[1] for row in lines(log, "done")] == ["victim"]
    assert worker.process.poll() is None
    assert len(worker.child_pids()) == 1


def test_fair_dispatch_a_busy_child_does_not_hold_back_short_tasks(app, queue_name, start_worker, tmp_path):
    start_worker([queue_name], concurrency=2)
    log = tmp_path / "runs"
    long_task = record.apply_async((str(log), "long", 3.0), queue=queue_name)
    wait_until(lambda: lines(log, "start"), what="the long task to start")
    shorts = [record.apply_async((str(log), f"short{i}", 0.0), queue=queue_name) for i in range(10)]
    for result in shorts:
        result.get(timeout=20)
    long_task.get(timeout=20)

    long_pid, long_done = lines(log, "done")[-1][2], float(lines(log, "done")[-1][3])
    assert lines(log, "done")[-1][1] == "long"
    short_rows = [row for row in lines(log, "done") if row[1].startswith("short")]
    assert len(short_rows) == 10
    # With prefetch=1 the broker never parks a short task behind the long one: every short
    # task ran on the other child and finished while the long one was still running.
    assert all(row[2] != long_pid for row in short_rows)
    assert all(float(row[3]) < long_done for row in short_rows)


def test_a_child_consuming_two_queues_holds_one_message_across_them(
    app, queue_name, other_queue_name, start_worker, tmp_path, broker_url
):
    start_worker([queue_name, other_queue_name], concurrency=1)
    log = tmp_path / "runs"
    record.apply_async((str(log), "slow", 120.0), queue=queue_name)  # outlives the test: killed at teardown
    wait_until(lambda: lines(log, "start"), timeout=60, what="the slow task to start")
    waiting = record.apply_async((str(log), "waiting", 0.0), queue=other_queue_name)
    # The busy child's one unacked message is the slow task: the broker keeps the other
    # one READY, for any idle child, instead of parking it behind the slow one.
    assert ready_and_unacked(broker_url, queue_name) == (0, 1)
    assert ready_and_unacked(broker_url, other_queue_name) == (1, 0)
    idle = start_worker([other_queue_name], concurrency=1)
    assert waiting.get(timeout=60) in idle.child_pids()
    assert [row[1] for row in lines(log, "done")] == ["waiting"]


def test_graceful_stop_finishes_and_acks_the_task_in_flight(app, queue_name, start_worker, tmp_path, amqp):
    worker = start_worker([queue_name], concurrency=1)
    log = tmp_path / "runs"
    result = record.apply_async((str(log), "inflight", 1.0), queue=queue_name)
    wait_until(lambda: lines(log, "start"), what="the task to start")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0
    assert isinstance(result.get(timeout=5), int)
    assert [row[1] for row in lines(log, "done")] == ["inflight"]
    assert queue_state(amqp, queue_name) == (0, 0)  # acked: nothing left to redeliver


def test_second_signal_exits_at_once_and_the_broker_requeues(app, queue_name, start_worker, tmp_path, amqp):
    worker = start_worker([queue_name], concurrency=1)
    log = tmp_path / "runs"
    record.apply_async((str(log), "abandoned", 60.0), queue=queue_name)
    wait_until(lambda: lines(log, "start"), what="the task to start")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in worker.log(), what="the first signal to be handled")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(10) != 0
    wait_until(lambda: worker.child_pids() == [], what="children to exit")
    wait_until(lambda: queue_state(amqp, queue_name) == (1, 0), what="the message back on the queue")
    assert lines(log, "done") == []


def test_burst_of_1000_tasks_with_two_children_runs_each_exactly_once(app, queue_name, start_worker, tmp_path, amqp):
    log = tmp_path / "runs"
    for i in range(1000):
        record_quietly.apply_async((str(log), str(i)), queue=queue_name)
    assert queue_state(amqp, queue_name)[0] == 1000  # all confirmed and waiting
    start_worker([queue_name], concurrency=2)
    wait_until(lambda: len(lines(log, "done")) >= 1000, timeout=60, what="1000 tasks")
    wait_until(lambda: queue_state(amqp, queue_name) == (0, 2), what="an empty queue")
    counts = Counter(row[1] for row in lines(log, "done"))
    assert counts == Counter({str(i): 1 for i in range(1000)})
    assert len({row[2] for row in lines(log, "done")}) == 2  # both children took part


@pytest.mark.rabbitmq_only(reason="AMQP heartbeats; the embedded broker has no connection to time out")
def test_task_longer_than_heartbeat_timeout_runs_exactly_once(app, queue_name, start_worker, tmp_path):
    # Heartbeat 1 s: the broker drops a connection after two silent intervals. The task
    # runs 4 s, four intervals, while the child's main thread keeps the connection alive.
    worker = start_worker([queue_name], concurrency=1, extra_args=("--heartbeat", "1"))
    log = tmp_path / "runs"
    result = record.apply_async((str(log), "long", 4.0), queue=queue_name)
    assert isinstance(result.get(timeout=30), int)
    # Give a lost connection the chance to show: another task must go through the same child.
    assert record.apply_async((str(log), "after", 0.0), queue=queue_name).get(timeout=10) == result.get()
    assert [row[1] for row in lines(log, "start")] == ["long", "after"]
    assert "connection lost" not in worker.log()
