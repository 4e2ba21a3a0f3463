"""The one jittered backoff: publishers, listeners and retries all wait the same way (no broker)."""

from __future__ import annotations

import random

from taskq.backoff import jittered_backoff, reconnect_backoff
from taskq.broker import RetryPolicy
from taskq.middleware.retries import RetryRules, backoff
from tests.support import ROOT

# child.py's reconnect loop is being rewritten beside this; it moves to reconnect_backoff then.
NOT_YET_SWITCHED: set[str] = set()


def test_each_wait_is_in_the_upper_half_of_a_doubling_capped_step():
    rng = random.Random(3)
    for attempt in range(12):
        step = min(10.0, 0.5 * 2**attempt)
        waits = [jittered_backoff(attempt, first=0.5, cap=10.0, rng=rng) for _ in range(100)]
        assert all(step / 2 <= wait <= step for wait in waits)
        assert len(set(waits)) > 1


def test_reconnects_wait_half_a_second_doubling_to_ten():
    assert 0.25 <= reconnect_backoff(0) <= 0.5
    assert 5.0 <= reconnect_backoff(30) <= 10.0


def test_the_publisher_counts_its_attempts_from_one():
    policy = RetryPolicy(interval_start=0.2, interval_max=3.0)
    assert 0.1 <= policy.delay(1) <= 0.2
    assert 1.5 <= policy.delay(20) <= 3.0


def test_a_huge_attempt_count_waits_the_cap_instead_of_overflowing():
    # a task with max_retries=10_000 reaches attempts past 1023, where 2.0 ** n is no float
    rules = RetryRules(max_retries=10_000, retry_backoff=1.0, retry_backoff_max=600.0, retry_jitter=False)
    assert backoff(5000, rules) == 600.0
    assert jittered_backoff(2**31, first=0.0, cap=5.0) == 0.0


def test_no_other_module_jitters_by_itself():
    own = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "taskq").rglob("*.py")
        if "random.uniform(" in path.read_text() or ".uniform(" in path.read_text()
    )
    assert set(own) - NOT_YET_SWITCHED == {"taskq/backoff.py"}, own
