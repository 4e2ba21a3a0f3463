"""Reliability features on kombu's in-memory broker (InlineWorker), which has no delay cascade:
retries still happen (without backoff), countdown/eta are refused, time limits never end the
test process."""

from __future__ import annotations

import pytest

from taskq import ConfigurationError, TaskError


@pytest.fixture
def taskq_app():
    from tests.support.apps_reliability import app

    return app


def test_retries_run_without_backoff(taskq_worker, tmp_path):
    from tests.support.apps_reliability import always_fails, flaky

    log = tmp_path / "attempts"
    result = flaky.delay(str(log), 2)
    assert result.get(timeout=10) == "ok"
    assert log.read_text().count("attempt") == 3
    with pytest.raises(TaskError, match="broken for good"):
        always_fails.delay(str(tmp_path / "again")).get(timeout=10)
    assert (tmp_path / "again").read_text().count("attempt") == 3


def test_countdown_is_refused_without_rabbitmq(taskq_test_app):
    from tests.support.apps_reliability import record

    assert not taskq_test_app.broker_delays
    with pytest.raises(ConfigurationError, match="need RabbitMQ"):
        record.apply_async(("/nonexistent", "x"), countdown=1)


def test_time_limits_in_an_inline_worker(taskq_worker, tmp_path):
    from tests.support.apps_reliability import hangs_then_retries, overruns_softly

    with pytest.raises(TaskError, match="SoftTimeLimitExceeded"):
        overruns_softly.delay(str(tmp_path / "soft")).get(timeout=10)
    # The hard limit settles the message (retry, then fail) without os._exit in this process.
    log = tmp_path / "hard"
    with pytest.raises(TaskError, match="TimeLimitExceeded"):
        hangs_then_retries.delay(str(log)).get(timeout=10)
    assert log.read_text().count("attempt") == 2
