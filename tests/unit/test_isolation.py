"""The unit guard is on (tests/unit/conftest.py): every way out of the process is refused, through
the libraries taskq uses too, and each attempt is recorded for the guard to fail the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from kombu import Connection

import taskq.embedded
from tests.support.isolation import Isolation, ReachedOutside


def tcp() -> None:
    socket.create_connection(("127.0.0.1", 5672), timeout=1)


def kombu() -> None:
    # kombu retries what it takes for a lost connection: the guard's error must not be one.
    with Connection("amqp://guest:guest@127.0.0.1:5672//", connect_timeout=1) as connection:
        connection.ensure_connection(max_retries=2, interval_start=0, interval_step=0)


def embedded_broker(path) -> None:
    taskq.embedded.register()
    with Connection(f"taskq+sqlite://{path}/broker.db") as connection:
        connection.connect()


@pytest.mark.parametrize(
    "reach, refused",
    [
        (lambda tmp_path: tcp(), "connect to"),
        (lambda tmp_path: kombu(), "connect to"),
        (embedded_broker, "the embedded broker's store"),
        (lambda tmp_path: subprocess.run([sys.executable, "-c", "pass"]), "start the process"),
        (lambda tmp_path: os.fork(), "fork"),
    ],
    ids=["tcp", "kombu", "embedded-broker", "subprocess", "fork"],
)
def test_a_unit_test_cannot_leave_its_process(reach, refused, isolation: Isolation, tmp_path):
    with pytest.raises(ReachedOutside, match=refused):
        reach(tmp_path)
    assert isolation.attempts and refused in isolation.attempts[0]
    isolation.attempts.clear()  # refused as it should be: nothing left for the guard to fail


def test_an_attempt_the_code_caught_is_still_recorded(isolation: Isolation):
    try:
        tcp()
    except Exception:  # what careless code under test would do
        pass
    assert isolation.attempts == ["connect to ('127.0.0.1', 5672)"]
    isolation.attempts.clear()
