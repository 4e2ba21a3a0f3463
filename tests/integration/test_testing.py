"""The testing support users get, on the embedded broker: docs/testing.md's delayed-task example
(the in-memory broker is in tests/unit/test_testing.py)."""

from __future__ import annotations

import datetime

import pytest

from tests.support.apps import app as tests_app, record_quietly
from tests.support.waiting import wait_until


@pytest.fixture
def taskq_app():
    return tests_app


class TestDelayedTasksOnTheEmbeddedBroker:
    """docs/testing.md's delayed-task example: the embedded broker in tmp_path, and freezegun."""

    @pytest.fixture
    def taskq_broker_url(self, tmp_path):
        return f"taskq+sqlite://{tmp_path}/broker.db"

    def test_countdown_waits_in_the_broker_then_runs(self, taskq_worker, tmp_path):
        from freezegun import freeze_time

        log = tmp_path / "log"
        # Sent "an hour ago" with a one-hour countdown: due now by the real clock.
        with freeze_time(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)):
            due = record_quietly.apply_async((str(log), "due"), countdown=3600)
        later = record_quietly.apply_async((str(log), "later"), countdown=3600)
        taskq_worker.wait_until_idle()
        wait_until(lambda: log.exists() and "due" in log.read_text(), timeout=10, what="the due task")
        taskq_worker.wait_until_idle()
        assert "later" not in log.read_text()
        assert due.id != later.id
