"""pytest fixtures for testing taskq tasks without a broker server (loaded automatically).

Define a ``taskq_app`` fixture that returns your App; the plugin points it at a test
broker (kombu's in-memory one unless you override ``taskq_broker_url``) and gives you
``taskq_worker``, a worker running in a thread, with ``wait_until_idle()``.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from taskq.app import App
from taskq.testing import InlineWorker, reset_memory_broker


@pytest.fixture
def taskq_app() -> App:
    """Override this in your conftest.py: return the App whose tasks you test."""
    pytest.fail("define a `taskq_app` fixture that returns your taskq App", pytrace=False)


@pytest.fixture
def taskq_broker_url() -> str:
    """The broker the test app uses: in-memory. Override it to return an embedded broker
    URL in ``tmp_path`` (``f"taskq+sqlite://{tmp_path}/broker.db"``) to test delayed tasks:
    kombu's in-memory broker has no TTLs, so it refuses countdown and eta."""
    return "memory://"


@pytest.fixture
def taskq_test_app(taskq_app: App, taskq_broker_url: str) -> Iterator[App]:
    """Your app on a fresh test broker for the duration of one test."""
    reset_memory_broker()
    taskq_app.use_broker(taskq_broker_url)
    yield taskq_app
    taskq_app.close()
    reset_memory_broker()


@pytest.fixture
def taskq_worker(taskq_test_app: App) -> Iterator[InlineWorker]:
    """A worker for your app's queues, running in a thread of the test process."""
    with InlineWorker(taskq_test_app) as worker:
        yield worker
