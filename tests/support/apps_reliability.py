"""Tasks for the reliability tests (``-A tests.support.apps_reliability:app``; the quorum twin is ``:quorum_app``).

Each task notes every attempt in a file named by the test, so a test counts attempts
and side effects instead of trusting logs.
"""

from __future__ import annotations

import os
import time

from taskq import App, Retry, SoftTimeLimitExceeded
from tests.support.apps import append_line

app = App("reliability")
quorum_app = App("reliability-quorum", queue_type="quorum", delivery_limit=2)


def attempts_so_far(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


@app.task(max_retries=3, retry_backoff=0.2, retry_jitter=False)
def flaky(path: str, failures: int) -> str:
    """Fails ``failures`` times, then succeeds."""
    append_line(path, f"attempt {os.getpid()} {time.time():.6f}")
    if attempts_so_far(path) <= failures:
        raise ValueError(f"failure {attempts_so_far(path)}")
    return "ok"


@app.task(max_retries=2, retry_backoff=0.1, retry_jitter=False, retry_for=(ValueError,))
def always_fails(path: str, exc_name: str = "ValueError") -> None:
    append_line(path, "attempt")
    raise {"ValueError": ValueError, "KeyError": KeyError}[exc_name]("broken for good")


@app.task
def asks_to_retry(path: str, times: int) -> int:
    """Explicit ``raise Retry`` with no retry options on the task."""
    append_line(path, f"attempt {time.time():.6f}")
    count = attempts_so_far(path)
    if count <= times:
        try:
            raise ConnectionError("service busy")
        except ConnectionError as exc:
            raise Retry(countdown=0.1) from exc
    return count


@app.task(soft_time_limit=0.5, time_limit=5)
def overruns_softly(path: str) -> None:
    try:
        while True:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        append_line(path, "cleaned up")
        raise


@app.task(time_limit=1)
def hangs(path: str) -> None:
    append_line(path, f"attempt {os.getpid()}")
    time.sleep(60)


@app.task(time_limit=0.5, max_retries=1, retry_backoff=0.1, retry_jitter=False)
def hangs_then_retries(path: str) -> None:
    append_line(path, f"attempt {os.getpid()}")
    time.sleep(60)


@app.task
def record(path: str, token: str, seconds: float = 0.0) -> int:
    append_line(path, f"start {token} {os.getpid()} {time.time():.6f}")
    if seconds:
        time.sleep(seconds)
    append_line(path, f"done {token} {os.getpid()} {time.time():.6f}")
    return os.getpid()


@app.task(ignore_result=True)
def touch(directory: str, token: str, seconds: float = 0.0) -> None:
    """The side effect the kill test checks: one file per task, written after the work."""
    if seconds:
        time.sleep(seconds)
    append_line(os.path.join(directory, token), str(os.getpid()))


@quorum_app.task
def crashes(path: str) -> None:
    """Kills its worker child outright, as a segfaulting C extension would."""
    append_line(path, f"attempt {os.getpid()}")
    os._exit(70)


@quorum_app.task
def quorum_add(x: int, y: int) -> int:
    return x + y


@app.task(time_limit=0.5)
def hogs_the_gil(path: str) -> None:
    """A catastrophic regex: C code that never releases the GIL, so the child's main thread can't run."""
    import re

    append_line(path, f"attempt {os.getpid()} {time.time():.6f}")
    re.match(r"(a+)+$", "a" * 40 + "b")
