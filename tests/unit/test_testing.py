"""The testing support users get: tasks run by a real worker loop on the in-memory broker
(the same on the embedded broker is in tests/integration/test_testing.py)."""

from __future__ import annotations

import msgpack
import pytest

from taskq import TaskError
from taskq.testing import InlineWorker, reset_memory_broker
from tests.support.apps import add, app as tests_app, fail, record_quietly


@pytest.fixture
def taskq_app():
    return tests_app


def test_tasks_run_through_the_inline_worker(taskq_worker, tmp_path):
    results = [add.delay(i, 1) for i in range(20)]
    taskq_worker.wait_until_idle()
    assert [r.get(timeout=5) for r in results] == [i + 1 for i in range(20)]
    with pytest.raises(TaskError, match="ValueError: nope"):
        fail.delay("nope").get(timeout=5)


def test_wait_until_idle_means_every_task_ran(taskq_worker, tmp_path):
    path = tmp_path / "log"
    for i in range(50):
        record_quietly.delay(str(path), str(i))
    taskq_worker.wait_until_idle()
    assert sorted(int(line.split()[1]) for line in path.read_text().splitlines()) == list(range(50))


def test_bad_message_is_dead_lettered_in_memory_too(taskq_test_app, taskq_worker):
    connection = taskq_test_app.broker.connect()
    with connection:
        producer = connection.Producer()
        producer.publish(
            msgpack.packb({"args": [], "kwargs": {}}), routing_key="default",
            headers={"task": "no.such.task", "id": "x"}, content_type="application/x-msgpack",
            content_encoding="binary",
        )
        taskq_worker.wait_until_idle()
        message = connection.default_channel.basic_get("default.dead", no_ack=True)
        assert message.headers["reason"] == "unknown-task"


def test_memory_broker_is_reset_between_uses():
    reset_memory_broker()
    tests_app.use_broker("memory://")
    try:
        record_quietly.delay("/nonexistent", "left behind")  # no worker: stays queued
        reset_memory_broker()
        with InlineWorker(tests_app) as worker:
            worker.wait_until_idle()
            assert worker.child.idle_ticks >= 2
    finally:
        tests_app.close()


def test_docs_example_expired_task_is_dead_lettered(taskq_test_app, taskq_worker, tmp_path):
    from freezegun import freeze_time

    with freeze_time("2020-01-01"):
        record_quietly.apply_async((str(tmp_path / "log"), "late"), expires=60)
    taskq_worker.wait_until_idle()
    assert not (tmp_path / "log").exists()
    with taskq_test_app.broker.connect() as connection:
        message = connection.default_channel.basic_get("default.dead", no_ack=True)
    assert message.headers["reason"] == "expired"
