"""One RabbitMQ restart (stop_app/start_app), and everything that must survive it.

One test, one restart: a restart takes seconds and disturbs anything else using the
broker, so every check that needs the broker down or restarted shares this window. The
broker is a private node the suite started (tests/support/brokers.py), never the machine's own.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kombu import Connection

from taskq import PublishError, ResultLost
from taskq.message import TaskMessage
from tests.support.brokers import broker_reachable, queue_state
from tests.support.drain import Drain
from tests.support.reliability_fixtures import rapp  # noqa: F401  (a fixture)
from tests.support.waiting import wait_until

STORED = 30


@pytest.fixture(scope="module")
def broker_node(private_node):
    return private_node


@pytest.fixture(scope="module")
def broker_url(private_node) -> str:
    return private_node.url


def test_worker_messages_and_delays_survive_a_broker_restart(rapp, broker_node, broker_url, queue_name, start_worker, tmp_path):
    from tests.support.apps_reliability import record

    idle_queue = f"test.idle.{uuid.uuid4().hex[:8]}"
    log = tmp_path / "log"
    worker = start_worker([queue_name], concurrency=2, app="tests.support.apps_reliability:app")
    try:
        for i in range(STORED):  # no consumer on this queue: they must be on disk
            rapp.send(TaskMessage(id=f"stored-{i}", task=record.name), queue=idle_queue, want_result=False)
        delayed = record.apply_async((str(log), "delayed"), queue=queue_name, countdown=3)
        running = record.apply_async((str(log), "long", 6.0), queue=queue_name)
        wait_until(lambda: log.exists() and "start long" in log.read_text(), what="the long task running")

        broker_node.ctl("stop_app")
        try:
            # A result waiter whose reply connection broke fails at once, no hang.
            started = time.monotonic()
            with pytest.raises(ResultLost):
                running.get(timeout=20)
            assert time.monotonic() - started < 5
            # A producer retries within its bounded policy, then gives up with PublishError.
            started = time.monotonic()
            with pytest.raises(PublishError, match="did not confirm the publish .* after 7 attempts"):
                rapp.send(TaskMessage(id="never", task=record.name), queue=queue_name, want_result=False)
            publish_gave_up_after = time.monotonic() - started
            with pytest.raises(PublishError, match="cannot reach the broker"):  # with a result wanted
                record.apply_async((str(log), "never"), queue=queue_name)
        finally:
            broker_node.ctl("start_app")
        wait_until(lambda: broker_reachable(broker_url) is None, timeout=60, what="the broker back")
        print(f"\nPublishError after {publish_gave_up_after:.1f} s with the broker down")
        assert 4.5 <= publish_gave_up_after < 15  # RetryPolicy: 6 retries, 4.5-9 s of backoff

        assert worker.process.poll() is None, "the worker exited"
        # It reconnects, redeclares and serves new tasks ...
        back = time.monotonic()
        assert record.apply_async((str(log), "after"), queue=queue_name).get(timeout=40) in worker.child_pids()
        print(f"first new task served {time.monotonic() - back:.1f} s after the broker was back")
        assert "broker connection lost, reconnecting" in worker.log()
        assert "child died" not in worker.log()  # the children themselves rode it out
        # ... the unacked long task is run again (at least once) ...
        wait_until(lambda: log.read_text().count("done long") >= 1, timeout=30, what="the long task rerun")
        assert log.read_text().count("start long") == 2
        # ... the delayed message waited out the restart in its delay queue ...
        wait_until(lambda: "done delayed" in log.read_text(), timeout=30, what="the delayed task")
        assert delayed.id  # its reply queue died with the old connection: the side effect is the proof
        # ... and the messages nobody consumed are all still there.
        with Connection(broker_url) as connection:
            assert queue_state(connection, idle_queue) == (STORED, 0)
        assert worker.process.poll() is None
    finally:
        with Connection(broker_url) as connection:
            channel = connection.channel()
            for name in (idle_queue, idle_queue + ".dead"):
                try:
                    channel.queue_delete(name)
                except Exception:
                    channel = connection.channel()


def test_a_drain_through_a_kill_9_of_the_broker_loses_nothing(broker_node, broker_url, queue_name, start_worker, tmp_path):
    """A crash, not a restart: the VM dies with acks it had not yet written down."""
    from tests.support.cluster_app import classic_app

    concurrency = 4
    classic_app.use_broker(broker_url)
    try:
        worker = start_worker([queue_name], concurrency=concurrency, app="tests.support.cluster_app:classic_app")
        drain = Drain(classic_app, queue_name, tmp_path / "executions")
        try:
            broker_node.kill9()
        finally:
            broker_node.start()
        drain.wait_all_run()
        report = drain.report()
        print(f"\nsingle node, kill -9 and restart: {report}")
        assert report.lost == 0
        assert worker.process.poll() is None and "child died" not in worker.log()
        assert report.duplicates <= report.crash_bound(concurrency)  # docs/guarantees.md
    finally:
        classic_app.close()
