"""The embedded broker's tests' own helpers: helper processes running plain kombu, a throwaway
broker file per test, and counts read the way a client reads them. Test modules import the
fixtures (``url``, ``children``) by name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu import Connection

from tests.support import ROOT
from tests.support.waiting import wait_until as support_wait_until


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """The suite's poll-with-deadline, polling faster: these waits are milliseconds long."""
    return support_wait_until(condition, timeout=timeout, interval=0.005, what=what)


class Child:
    """A helper process running a snippet of plain kombu; it reports by printing lines."""

    def __init__(self, code: str, url: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import taskq.embedded\n" + code, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, line: str, timeout: float = 10.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and line not in self.lines:
                self._reader.join(1)
                if line not in self.lines:
                    raise AssertionError(f"child exited {self.process.returncode}: {self.process.stderr.read()}")
            return line in self.lines

        wait_until(seen, timeout, what=f"child to print {line!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"taskq+sqlite://{tmp_path}/broker.db"


@pytest.fixture
def children():
    started: list[Child] = []

    def start(code: str, url: str) -> Child:
        child = Child(code, url)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


def queue_state(connection: Connection, name: str) -> tuple[int, int]:
    """(ready messages, consumers), as a passive declare reports them."""
    with connection.channel() as channel:
        _, ready, consumers = channel.queue_declare(queue=name, passive=True)
    return ready, consumers


def drain(connection: Connection, received: list, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(received) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(received)} of {count} messages")
        try:
            connection.drain_events(timeout=remaining)
        except socket.timeout:
            pass
