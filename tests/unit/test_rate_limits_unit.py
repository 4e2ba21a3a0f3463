"""Rate-limit parsing, decoration checks and the GCRA slots, without a broker."""

from __future__ import annotations

import pytest

from taskq import App
from taskq.errors import ConfigurationError
from taskq.middleware.rate_limits import parse_rate
from taskq.state.limits import MemoryRateSlots


def test_rates_are_seconds_between_starts():
    assert parse_rate("10/s") == 0.1 and parse_rate("600/m") == 0.1 and parse_rate("3600/h") == 1.0
    assert parse_rate("0.5/s") == 2.0


@pytest.mark.parametrize("bad", ["10", "10/d", "0/s", "-1/s", "x/s", "inf/s", "nan/s", "", "/s"])
def test_a_rate_that_cannot_work_fails_at_decoration(bad):
    app = App("tests-rate-unit", broker="memory://", results="memory://")
    with pytest.raises(ConfigurationError, match="rate_limit"):
        app.task(rate_limit=bad)(lambda: None)


def test_a_rate_limit_needs_a_state_store():
    app = App("tests-rate-unit", broker="memory://")
    with pytest.raises(ConfigurationError, match="rate_limit"):
        app.task(rate_limit="1/s")(lambda: None)


def test_slots_are_an_interval_apart_and_never_in_the_past():
    now = [100.0]
    slots = MemoryRateSlots(clock=lambda: now[0])
    assert [slots.reserve("k", 0.5) for _ in range(3)] == [100.0, 100.5, 101.0]
    now[0] = 200.0  # idle: the next slot is now, no burst saved up
    assert slots.reserve("k", 0.5) == 200.0 and slots.reserve("other", 0.5) == 200.0
