"""An app with one every=1 schedule, for the scheduler tests: names come from the environment,
so each test has its own app (lease), queue and last-tick queue; each run appends its task id
(the tick's deterministic id) to $TASKQ_TEST_SCHEDULER_RUNS."""

from __future__ import annotations

import os
from typing import Any

from taskq import App

app = App(os.environ.get("TASKQ_TEST_SCHEDULER_APP", "sched-test"))
QUEUE = os.environ.get("TASKQ_TEST_SCHEDULER_QUEUE", "sched-test")
RUNS = os.environ.get("TASKQ_TEST_SCHEDULER_RUNS")


@app.periodic(every=1, catch_up="all", queue=QUEUE, name="tick", ignore_result=True)
def tick() -> None:
    """Does nothing: the hook below records that it ran, and for which tick."""


@app.on_task_start
def record(delivery: Any) -> None:
    if RUNS and delivery.envelope is not None:
        # One short O_APPEND write per run: lines from concurrent children never interleave.
        with open(RUNS, "a") as runs:
            runs.write(delivery.envelope.id + "\n")


if os.environ.get("TASKQ_TEST_SCHEDULER_GHOST"):
    # A schedule of a task no worker knows: fired all the same, dead-lettered by the worker.
    app.schedule("tests.no_such_task", every=1, queue=QUEUE, name="ghost")
