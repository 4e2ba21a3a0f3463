"""The delay cascade's arithmetic, without a broker (its behaviour on a broker is in
tests/integration/test_delay.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from freezegun import freeze_time

from taskq import App, delay

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
