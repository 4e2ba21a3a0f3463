"""Running ``taskq`` commands as subprocesses, and reading the broker's own numbers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.brokers import BROKER_NODE, RabbitNode
from tests.support.waiting import wait_until


def taskq(*args: str, broker_url: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one ``taskq`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=ROOT, env={**os.environ, "TASKQ_BROKER_URL": broker_url}, input=input,
        capture_output=True, text=True, timeout=timeout,
    )


class Listener:
    """A long-running ``taskq logs`` or ``taskq events`` subprocess, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, args: list[str], broker_url: str, directory: Path, name: str) -> None:
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskq", *args],
                cwd=ROOT, env={**os.environ, "TASKQ_BROKER_URL": broker_url, "PYTHONUNBUFFERED": "1"},
                stdout=out, stderr=err,
            )
        wait_until(lambda: "listening" in self.stderr() or self.process.poll() is not None, what=f"{name} listening")
        assert self.process.poll() is None, f"{name} exited: {self.stderr()}"

    @property
    def queue_name(self) -> str:
        return self.stderr().split("(queue ", 1)[1].split(")", 1)[0]

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def json_lines(self, text: str | None = None) -> list[dict]:
        """The complete lines as JSON; a last line still being written is left for the next read."""
        return [json.loads(line) for line in complete_lines(self.stdout() if text is None else text) if line.strip()]

    def stop(self) -> str:
        """Ctrl-C; returns stderr, where the summary is."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(20)
        return self.stderr()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)


def complete_lines(text: str) -> list[str]:
    """Lines that end in a newline: a reader racing the writer may see half of the last one."""
    return text.split("\n")[:-1]


def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl ARGS`` against the node under test (``-n``), never the machine's default by accident.

    A test on a private node (tests.support.brokers) calls that node's ``ctl`` instead.
    """
    return BROKER_NODE.ctl(*args)


def rabbitmqctl_queues(node: RabbitNode = BROKER_NODE) -> dict[str, tuple[int, int, int]]:
    """{queue: (ready, unacked, consumers)} straight from ``rabbitmqctl list_queues``."""
    rows = node.list_queues("messages_ready", "messages_unacknowledged", "consumers")
    return {name: (row["messages_ready"], row["messages_unacknowledged"], row["consumers"]) for name, row in rows.items()}


def rabbitmqctl_rows(command: str, *columns: str, node: RabbitNode = BROKER_NODE) -> list[dict]:
    """The rows of a ``rabbitmqctl list_*`` command on the node under test, one dict per row.

    Channels and connections belong to no vhost: only the other listings take ``-p``.
    """
    vhost = () if command in ("list_channels", "list_connections") else ("-p", node.vhost)
    return node.ctl_json(command, *vhost, *columns)


def ready_and_unacked(broker_url: str, queue: str) -> tuple[int, int]:
    """(messages ready, messages unacked) of a queue, from the broker itself, on either broker.

    AMQP can't count unacked messages: on RabbitMQ ``rabbitmqctl`` does; the embedded
    broker's are the reserved rows of its database, once dead holders' rows are handed back.
    """
    if broker_url.startswith("amqp://"):
        ready, unacked, _ = rabbitmqctl_queues()[queue]
        return ready, unacked
    from taskq.embedded.store import BrokerStore
    from taskq.embedded.transport import database_path

    store = BrokerStore(database_path(broker_url.removeprefix("taskq+")))
    try:
        store.reap_dead_owners()
        with closing(sqlite3.connect(store.path)) as db:
            (unacked,), = db.execute("SELECT count(*) FROM messages WHERE queue = ? AND owner_pid IS NOT NULL", (queue,))
        return store.ready_count(queue), unacked
    finally:
        store.close()


FAST_HEARTBEATS = {"TASKQ_HEARTBEAT_INTERVAL": "0.3"}


@pytest.fixture
def listeners(broker_url: str, tmp_path: Path):
    """Start ``taskq logs`` / ``taskq events`` subprocesses; each is ready (its queue bound) when returned."""
    started: list[Listener] = []

    def start(*args: str, name: str) -> Listener:
        listener = Listener(list(args), broker_url, tmp_path, name)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.kill()


@pytest.fixture
def evapp(broker_url: str):
    """tests.support.event_apps.app on the test broker."""
    from tests.support.event_apps import app

    app.use_broker(broker_url)
    yield app
    app.close()


@pytest.fixture(scope="session", autouse=True)
def delete_prefixed_entities(broker_url: str):
    """After the session, delete every queue and exchange named with this session's prefix."""
    yield
    from tests.support.event_apps import PREFIX

    from kombu import Connection

    names = [name for name in rabbitmqctl_queues() if PREFIX in name]
    exchanges = [f"{PREFIX}.animals", f"{PREFIX}.severity"]
    with Connection(broker_url) as connection:
        for name in names:
            connection.channel().queue_delete(name)
        for name in exchanges:
            connection.channel().exchange_delete(name)
