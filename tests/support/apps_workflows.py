"""The app of the workflow tests' worker subprocesses (``-A tests.support.apps_workflows:app``).

``TASKQ_TEST_RESULTS`` names its state store (a SQLite file of the test's own); empty: no
store, for the chains and groups that need none; unset (the test process, which only sends):
``memory://``, so sending a chord passes its check. Tasks that count their runs append a line
to a file per run (durable across SIGKILL); tasks a test kills write their pid, then wait.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from taskq import App
from taskq.middleware import Decision, Delivery, Middleware, Succeeded

app = App("tests-workflows", results=os.environ.get("TASKQ_TEST_RESULTS", "memory://") or None)


def note(path: str, line: str) -> None:
    with open(path, "a") as log:
        log.write(line + "\n")
        log.flush()
        os.fsync(log.fileno())


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def fail(*args: Any) -> None:
    raise ValueError(f"no thanks: {args}")


@app.task
def record(value: Any, path: str) -> Any:
    """Count a run (a line in ``path``) and pass the value on."""
    note(path, repr(value))
    return value


@app.task
def total(values: list[int], path: str) -> int:
    """A chord's callback: one line per run, so the test counts them."""
    note(path, repr(values))
    return sum(values)


@app.task
def hang_first(value: int, marker: str) -> int:
    """The first run writes its pid to ``marker`` and waits to be killed; a later run returns."""
    path = Path(marker)
    if path.exists():
        return value
    path.write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)


class CrashAfterJoin(Middleware):
    """Kills its worker child once, at the worst moment of a chord: the member's join is recorded
    and the callback is about to be published, but neither published nor acked. Armed by
    ``TASKQ_TEST_CRASH_MARKER`` (the file it writes before dying, so it fires once)."""

    def before_settle(self, delivery: Delivery, decision: Decision) -> Decision | None:
        marker = os.environ.get("TASKQ_TEST_CRASH_MARKER")
        if marker and isinstance(decision, Succeeded) and decision.publish and not os.path.exists(marker):
            note(marker, str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return None


app.add_middleware(CrashAfterJoin())
