"""The app of the state-store tests' worker subprocesses (``-A tests.support.apps_state:app``).

Its store is the one the test names in ``TASKQ_TEST_RESULTS`` (a SQLite file or a Redis URL
with a key prefix of the test's own), so the test process reads what the worker wrote.
Tasks that must wait for the test wait for a file the test creates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import taskq
from taskq import App

app = App("tests-state", results=os.environ.get("TASKQ_TEST_RESULTS", "memory://"))

#: How often a waiting task looks for the test's go-ahead file.
LOOK_EVERY = 0.02


def wait_for(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(LOOK_EVERY)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(ignore_result=True)
def quiet(x: int) -> int:
    return x


@app.task
def resize(go: str) -> str:
    """Report progress, then wait for the test's file: the test reads the progress meanwhile."""
    taskq.current().progress(0.4, step="resize")
    wait_for(go)
    return "resized"


@app.task
def hang_once(marker: str) -> int:
    """The first run notes its pid and hangs (the test kills it); a later run returns at once."""
    path = Path(marker)
    if path.exists():
        return os.getpid()
    path.write_text(str(os.getpid()))
    time.sleep(60)
    return -1
