"""The delay cascade's arithmetic (no broker) and its behaviour on the real broker."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from freezegun import freeze_time

from taskq import App, TaskError, delay
from tests.cli_helpers import rabbitmqctl_queues
from tests.conftest import queue_state, wait_until
from tests.reliability_fixtures import rapp  # noqa: F401  (a fixture)

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_routing_key_is_the_delay_in_binary_then_the_queue():
    key = delay.routing_key(5, "orders.eu")
    words = key.split(".")
    assert len(words) == delay.LEVELS + 2
    assert "".join(words[: delay.LEVELS]) == format(5, f"0{delay.LEVELS}b")
    assert words[delay.LEVELS :] == ["orders", "eu"]


def test_routing_key_refuses_out_of_range_delays():
    with pytest.raises(ValueError):
        delay.routing_key(0, "q")
    with pytest.raises(ValueError):
        delay.routing_key(delay.MAX_DELAY_MS + 1, "q")


def test_binding_keys_dont_match_a_queue_with_a_longer_name():
    # "orders" must not receive what goes to "eu.orders": exactly LEVELS wildcards first.
    assert delay.delivery_binding_key("orders").count("*") == delay.LEVELS
    assert delay.check_queue_name("eu.orders") is None
    assert "'*'" in delay.check_queue_name("a.*.b")
    assert "too long" in delay.check_queue_name("x" * 200)


@freeze_time(NOW)
def test_countdown_and_eta_become_the_same_absolute_time():
    assert delay.eta_from(countdown=90) == NOW.timestamp() + 90
    assert delay.eta_from(eta=NOW + dt.timedelta(seconds=90)) == NOW.timestamp() + 90
    assert delay.eta_from() is None


def test_eta_must_be_aware_and_exclusive_with_countdown():
    with pytest.raises(ValueError, match="aware"):
        delay.eta_from(eta=dt.datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="not both"):
        delay.eta_from(countdown=1, eta=NOW)
    with pytest.raises(ValueError, match="negative"):
        delay.eta_from(countdown=-1)


@freeze_time(NOW)
def test_delay_ms_rounds_up_and_caps_one_trip():
    now = NOW.timestamp()
    assert delay.delay_ms(None) == 0
    assert delay.delay_ms(now - 5) == 0  # already due: straight to the queue
    assert delay.delay_ms(now + 0.0001) == 1  # never early
    assert delay.delay_ms(now + 1.5) == 1500
    assert delay.delay_ms(now + 365 * 86400) == delay.MAX_DELAY_MS  # a worker sends it round again
    assert delay.delay_ms(1e308) == delay.MAX_DELAY_MS  # its milliseconds are inf: capped, not an OverflowError


@freeze_time(NOW)
def test_route_goes_direct_when_due_and_through_the_cascade_otherwise():
    now = NOW.timestamp()
    assert delay.route("q", None) == ("", "q", [])
    assert delay.route("q", now - 1) == ("", "q", [])
    exchange, key, entities = delay.route("q", now + 2, "quorum")
    assert exchange == "taskq.delay.quorum.31"
    assert key == delay.routing_key(2000, "q")
    assert entities == [delay.DelayTopology("quorum")]


@freeze_time(NOW)
def test_an_eta_after_the_expiry_is_refused():
    app = App("delay-unit")

    @app.task
    def noop():
        return None

    with pytest.raises(ValueError, match="expire before its eta"):
        noop.apply_async(countdown=10, expires=5)


# -- on the broker --------------------------------------------------------------------


def unacked(queue: str) -> int:
    """messages_unacknowledged as rabbitmqctl reports it (AMQP itself can't tell)."""
    return rabbitmqctl_queues()[queue][1]


@pytest.mark.both_brokers
def test_delayed_message_waits_in_the_broker_not_in_a_worker(rapp, queue_name, start_worker, tmp_path, amqp, broker_url):
    """With one child, an immediate task runs at once while an earlier-sent delayed one waits."""
    from tests.apps_reliability import record

    log = tmp_path / "log"
    start_worker([queue_name], concurrency=1, app="tests.apps_reliability:app")
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
    from tests.apps_reliability import record

    start_worker([queue_name], concurrency=1, app="tests.apps_reliability:app")
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
    from tests.apps_reliability import record

    start_worker([queue_name], concurrency=1, app="tests.apps_reliability:app")
    log = tmp_path / "log"
    sent = time.time()
    message = TaskMessage(id=str(uuid.uuid4()), task=record.name, args=(str(log), "early"), eta=sent + 1.5)
    # Straight onto the work queue, around the cascade, as if its trip had been cut short.
    rapp.broker.publish(message.body(), routing_key=queue_name, headers=message.headers(), declare=[rapp.queue(queue_name)])
    wait_until(lambda: log.exists(), timeout=10, what="the task to run")
    started = float(log.read_text().split()[3])
    assert started - sent >= 1.4  # re-sent with the time left, not run at once
