"""The delay cascade's behaviour on the real broker (its arithmetic is in tests/unit/test_delay.py)."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from taskq import TaskError
from tests.support.brokers import queue_state
from tests.support.cli_helpers import rabbitmqctl_queues
from tests.support.reliability_fixtures import rapp  # noqa: F401  (a fixture)
from tests.support.waiting import wait_until


def unacked(queue: str) -> int:
    """messages_unacknowledged as rabbitmqctl reports it (AMQP itself can't tell)."""
    return rabbitmqctl_queues()[queue][1]


@pytest.mark.both_brokers
def test_delayed_message_waits_in_the_broker_not_in_a_worker(rapp, queue_name, start_worker, tmp_path, amqp, broker_url):
    """With one child, an immediate task runs at once while an earlier-sent delayed one waits."""
    from tests.support.apps_reliability import record

    log = tmp_path / "log"
    start_worker([queue_name], concurrency=1, app="tests.support.apps_reliability:app")
    sent = time.time()
    later = record.apply_async((str(log), "later"), queue=queue_name, countdown=1.5)
    now = record.apply_async((str(log), "now"), queue=queue_name)
    now.get(timeout=10)
    assert time.time() - sent < 1.0
    assert "later" not in log.read_text()
    # The child holds nothing: the broker shows the queue empty and nothing unacked.
    assert queue_state(amqp, queue_name)[0] == 0
    if broker_url.startswith("amqp://"):  # only rabbitmqctl can count unacked messages
        assert unacked(queue_name) == 0
    later.get(timeout=10)
    started = float(next(line for line in log.read_text().splitlines() if line.startswith("start later")).split()[3])
    assert 1.5 <= started - sent < 2.5


@pytest.mark.both_brokers
def test_eta_datetime_and_expiry_with_delay(rapp, queue_name, start_worker, tmp_path, amqp):
    from tests.support.apps_reliability import record

    start_worker([queue_name], concurrency=1, app="tests.support.apps_reliability:app")
    log = tmp_path / "log"
    sent = time.time()
    on_time = record.apply_async(
        (str(log), "eta"), queue=queue_name, eta=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.5), expires=5
    )
    on_time.get(timeout=10)
    assert time.time() - sent >= 0.5
    # A delayed message that outlives its expiry on the way (here: eta forged past it) is
    # dead-lettered as expired, and the caller hears about it instead of timing out.
    from taskq.message import TaskMessage

    message = TaskMessage(
        id=str(uuid.uuid4()), task=record.name, args=(str(log), "late"), expires_at=time.time() + 0.2, eta=time.time() + 0.4
    )
    result = record.app.send(message, queue=queue_name)
    with pytest.raises(TaskError, match="expired"):
        result.get(timeout=10)
    wait_until(lambda: queue_state(amqp, queue_name + ".dead")[0] == 1, what="expired message in .dead")
    assert "late" not in log.read_text()


@pytest.mark.both_brokers
def test_a_message_arriving_before_its_eta_is_sent_round_again(rapp, queue_name, start_worker, tmp_path):
    """What a delay longer than one trip through the cascade (~49 days) relies on."""
    from taskq.message import TaskMessage
    from tests.support.apps_reliability import record

    start_worker([queue_name], concurrency=1, app="tests.support.apps_reliability:app")
    log = tmp_path / "log"
    sent = time.time()
    message = TaskMessage(id=str(uuid.uuid4()), task=record.name, args=(str(log), "early"), eta=sent + 1.5)
    # Straight onto the work queue, around the cascade, as if its trip had been cut short.
    rapp.broker.publish(message.body(), routing_key=queue_name, headers=message.headers(), declare=[rapp.queue(queue_name)])
    wait_until(lambda: log.exists(), timeout=10, what="the task to run")
    started = float(log.read_text().split()[3])
    assert started - sent >= 1.4  # re-sent with the time left, not run at once
