"""The retry rules: which failures come back, after how long, and when they stop."""

from __future__ import annotations

import random

import pytest

from taskq import App, ConfigurationError, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from taskq.middleware.retries import EXPLICIT_RETRY_LIMIT, RetryRules, backoff, decide, rules_from


def test_backoff_doubles_then_caps_without_jitter():
    rules = RetryRules(max_retries=10, retry_backoff=0.5, retry_backoff_max=3.0, retry_jitter=False)
    assert [backoff(n, rules) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_in_the_upper_half_of_each_step():
    rules = RetryRules(max_retries=10, retry_backoff=1.0, retry_backoff_max=600.0, retry_jitter=True)
    rng = random.Random(7)
    for attempts in range(12):
        step = min(600.0, 2.0**attempts)
        values = [backoff(attempts, rules, rng) for _ in range(200)]
        assert all(step / 2 <= v <= step for v in values)
        assert len(set(values)) > 1  # really jittered


def test_default_is_no_retry():
    decision = decide(RetryRules(), ValueError("x"), attempts=0)
    assert not decision.retry and decision.reason == "failed"


def test_retries_until_max_then_exhausted():
    rules = RetryRules(max_retries=2, retry_backoff=0.2, retry_jitter=False)
    first = decide(rules, ValueError("x"), attempts=0)
    second = decide(rules, ValueError("x"), attempts=1)
    third = decide(rules, ValueError("x"), attempts=2)
    assert (first.retry, first.countdown) == (True, 0.2)
    assert (second.retry, second.countdown) == (True, 0.4)
    assert not third.retry and third.reason == "retries-exhausted"


def test_retry_for_limits_which_exceptions_come_back():
    rules = RetryRules(max_retries=3, retry_for=(ConnectionError,))
    assert decide(rules, ConnectionResetError(), attempts=0).retry
    refused = decide(rules, KeyError("k"), attempts=0)
    assert not refused.retry and refused.reason == "failed"


def test_time_limits_follow_the_policy_like_any_failure():
    rules = RetryRules(max_retries=1, retry_jitter=False)
    assert decide(rules, TimeLimitExceeded("slow"), attempts=0).retry
    assert decide(rules, SoftTimeLimitExceeded(), attempts=0).retry
    assert not decide(RetryRules(), TimeLimitExceeded("slow"), attempts=0).retry


def test_explicit_retry_works_without_options_and_has_a_default_limit():
    decision = decide(RetryRules(), Retry(countdown=5), attempts=0)
    assert decision.retry and decision.countdown == 5
    stop = decide(RetryRules(), Retry(countdown=5), attempts=EXPLICIT_RETRY_LIMIT)
    assert not stop.retry and stop.reason == "retries-exhausted"


def test_explicit_retry_limits_and_reports_its_cause():
    cause = ConnectionError("busy")
    try:
        raise Retry(max_retries=1) from cause
    except Retry as exc:
        request = exc
    assert decide(RetryRules(max_retries=10), request, attempts=0).retry
    final = decide(RetryRules(max_retries=10), request, attempts=1)
    assert not final.retry and final.cause is cause


def test_explicit_retry_without_countdown_uses_the_backoff():
    rules = RetryRules(max_retries=3, retry_backoff=0.3, retry_jitter=False)
    assert decide(rules, Retry(), attempts=1).countdown == pytest.approx(0.6)


def test_retry_is_not_a_taskq_error():
    from taskq import TaskqError

    assert not issubclass(Retry, TaskqError)
    assert issubclass(SoftTimeLimitExceeded, TaskqError) and issubclass(TimeLimitExceeded, TaskqError)


def test_bad_options_are_configuration_errors():
    app = App("bad-options")
    with pytest.raises(ConfigurationError, match="soft_time_limit"):
        app.task(time_limit=1, soft_time_limit=2)(lambda: None)
    with pytest.raises(ConfigurationError, match="max_retries"):
        app.task(max_retries=-1, name="neg")(lambda: None)


def test_publish_retry_window_is_bounded_and_not_empty():
    from taskq.broker import RetryPolicy

    policy = RetryPolicy()
    for _ in range(100):
        total = sum(policy.delay(attempt) for attempt in range(1, policy.max_retries + 1))
        assert 4.5 <= total <= 9.0


def test_retry_for_accepts_a_single_class_and_refuses_non_exceptions():
    app = App("retry-for")
    task = app.task(max_retries=1, retry_for=KeyError, name="one")(lambda: None)
    assert rules_from(task.options.settings).retry_for == (KeyError,)
    with pytest.raises(ConfigurationError, match="exception classes"):
        app.task(max_retries=1, retry_for=("KeyError",), name="two")(lambda: None)
