"""pytest fixtures for testing taskq tasks without a broker server (loaded automatically).

Define a ``taskq_app`` fixture that returns your App; the plugin points it at kombu's
in-memory broker for the test and gives you ``taskq_worker``, a worker running in a
thread, with ``wait_until_idle()``.
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
def taskq_memory_app(taskq_app: App) -> Iterator[App]:
    """Your app on a fresh in-memory broker for the duration of one test."""
    reset_memory_broker()
    taskq_app.use_broker("memory://")
    yield taskq_app
    taskq_app.close()
    reset_memory_broker()


@pytest.fixture
def taskq_worker(taskq_memory_app: App) -> Iterator[InlineWorker]:
    """A worker for your app's queues, running in a thread of the test process."""
    with InlineWorker(taskq_memory_app) as worker:
        yield worker
