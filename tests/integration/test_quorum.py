"""Quorum queues: declared as such, and a message that kills every worker ends in .dead."""

from __future__ import annotations

import time

from click.testing import CliRunner

from taskq.cli import main
from tests.support.brokers import BROKER_NODE, queue_state
from tests.support.reliability_fixtures import qapp  # noqa: F401  (a fixture)
from tests.support.waiting import wait_until

APP = "tests.support.apps_reliability:quorum_app"


def queue_types(*names: str) -> dict[str, str]:
    rows = BROKER_NODE.list_queues("type", "arguments")
    return {name: f"{rows[name]['type']}\t{rows[name]['arguments']}" for name in names if name in rows}


def test_poison_message_is_dead_lettered_after_the_delivery_limit(qapp, queue_name, start_worker, tmp_path, broker_url, amqp):
    from tests.support.apps_reliability import crashes, quorum_add

    worker = start_worker([queue_name], concurrency=1, app=APP)
    log = tmp_path / "attempts"
    crashes.apply_async((str(log),), queue=queue_name)
    # delivery_limit=2: delivered, redelivered twice, then the broker dead-letters it.
    wait_until(lambda: queue_state(amqp, queue_name + ".dead")[0] == 1, timeout=30, what="the poison message in .dead")
    assert log.read_text().count("attempt") == 3
    assert worker.process.poll() is None
    assert quorum_add.apply_async((2, 3), queue=queue_name).get(timeout=20) == 5
    listed = CliRunner().invoke(main, ["dead", "list", queue_name, "--broker", broker_url])
    assert "reason=delivery_limit" in listed.stdout and crashes.name in listed.stdout
    types = queue_types(queue_name, queue_name + ".dead", "taskq.delay.quorum.00")
    assert "quorum" in types[queue_name] and "x-delivery-limit" in types[queue_name]
    assert "quorum" in types[queue_name + ".dead"]
    assert "quorum" in types["taskq.delay.quorum.00"]


def test_delays_work_on_quorum_queues(qapp, queue_name, start_worker):
    from tests.support.apps_reliability import quorum_add

    start_worker([queue_name], concurrency=1, app=APP)
    sent = time.monotonic()
    assert quorum_add.apply_async((1, 1), queue=queue_name, countdown=0.5).get(timeout=20) == 2
    assert time.monotonic() - sent >= 0.5
