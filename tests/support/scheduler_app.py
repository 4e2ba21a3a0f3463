"""An app with one every=1 schedule, for the scheduler tests: names come from the environment,
so each test has its own app (lease), queue and last-tick queue."""

from __future__ import annotations

import os

from taskq import App

app = App(os.environ.get("TASKQ_TEST_SCHEDULER_APP", "sched-test"))
QUEUE = os.environ.get("TASKQ_TEST_SCHEDULER_QUEUE", "sched-test")


@app.periodic(every=1, catch_up="all", queue=QUEUE, name="tick", ignore_result=True)
def tick() -> None:
    """Does nothing: the test counts the messages the scheduler fired."""
