"""Fixtures of the reliability tests; test modules import them by name."""

from __future__ import annotations

import pytest
from kombu import Connection


@pytest.fixture
def rapp(broker_url: str):
    """The reliability test app (tests/support/apps_reliability.py), pointed at the test broker."""
    from tests.support.apps_reliability import app

    app.use_broker(broker_url)
    yield app
    app.close()


@pytest.fixture
def qapp(broker_url: str, queue_name: str):
    """The quorum twin of ``rapp``. The fixture deletes classic and quorum queues alike."""
    from tests.support.apps_reliability import quorum_app

    quorum_app.use_broker(broker_url)
    yield quorum_app
    quorum_app.close()


def dead_letters(broker_url: str, queue_name: str) -> list:
    """Every message in ``<queue>.dead`` (taken off it: call once, at the end of a test)."""
    messages = []
    with Connection(broker_url) as connection:
        channel = connection.channel()
        while True:
            message = channel.basic_get(queue_name + ".dead", no_ack=True)
            if message is None:
                return messages
            messages.append(message)
