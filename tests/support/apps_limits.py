"""The app of the flow-control tests' worker subprocesses (``-A tests.support.apps_limits:app``).

Its store is the one the test names in ``TASKQ_TEST_RESULTS``, shared by every worker the test
starts; each task appends its start time to a file the test names, so the test judges the
limit from what the tasks saw, not from its own clock.
"""

from __future__ import annotations

import os
import time

from taskq import App

app = App("tests-limits", results=os.environ.get("TASKQ_TEST_RESULTS", "memory://"))

#: The limit the rate test and bench/rate_limit.py run under.
RATE = 20


def record_start(path: str) -> None:
    """One line per start, written with O_APPEND so processes never interleave a line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{time.time():.6f} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@app.task(rate_limit=f"{RATE}/s")
def limited(path: str) -> None:
    record_start(path)
