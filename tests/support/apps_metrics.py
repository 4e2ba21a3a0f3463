"""Tasks for the Prometheus metrics tests (``-A tests.support.apps_metrics:app``): one that succeeds
and says which child ran it, one that fails, one retried until it gives up, one that holds
its child until the test lets it go."""

from __future__ import annotations

import os
import time

from taskq import App
from tests.support.apps import append_line

app = App("metrics")


@app.task(name="metrics.pid")
def pid() -> int:
    return os.getpid()


@app.task(name="metrics.fails")
def fails() -> None:
    raise ValueError("fails on purpose")


@app.task(name="metrics.retried", max_retries=2, retry_backoff=0.0, retry_jitter=False)
def retried() -> None:
    raise ValueError("fails every attempt")


@app.task(name="metrics.holds")
def holds(log: str, token: str, release: str) -> int:
    """Note 'start token pid', then run until the file ``release`` exists; a second delivery
    of the same token (its child was killed) returns at once."""
    redelivered = os.path.exists(log) and f"start {token} " in open(log).read()
    append_line(log, f"start {token} {os.getpid()}")
    while not redelivered and not os.path.exists(release):
        time.sleep(0.01)
    return os.getpid()
