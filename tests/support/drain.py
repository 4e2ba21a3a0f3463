"""Measuring a drain through a broker failure: every execution of every task, with its time.

Each run of ``tests.support.cluster_app``'s ``note`` appends ``<n> <epoch>`` to one file, so a test
counts executions per task (lost = never run, duplicate = run twice) and sees from the
timestamps when work stopped and resumed, instead of trusting logs.
"""

from __future__ import annotations

import collections
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from taskq import App
from taskq.message import TaskMessage
from tests.support.waiting import wait_until

TASKS = 2000
LOSE_AFTER = 300  # tasks done before the broker goes: the drain is well under way


@dataclass
class DrainReport:
    tasks: int
    lost: int
    duplicates: int
    rate: float  #: tasks per second before the failure
    pause: float  #: the longest gap between two completions after the failure began
    resumed_after: float  #: from the failure's start to the first completion after that gap

    def crash_bound(self, concurrency: int) -> int:
        """docs/guarantees.md: a crash reruns the running tasks and those acked in about the last second.

        Two seconds of the drain's own rate leaves room for a loaded machine's slower disk.
        """
        return concurrency + int(2 * self.rate)

    def __str__(self) -> str:
        return (f"{self.tasks} tasks at {self.rate:.0f}/s: {self.lost} lost, {self.duplicates} duplicates; "
                f"work paused {self.pause:.1f} s, resumed {self.resumed_after:.1f} s after the failure began")


class Drain:
    """``TASKS`` tasks sent to one queue; the test breaks the broker once ``LOSE_AFTER`` have run."""

    def __init__(self, app: App, queue: str, log: Path) -> None:
        from tests.support.cluster_app import note

        self.log = log
        self.sent_at = time.time()
        messages = [TaskMessage(id=str(uuid.uuid4()), task=note.name, args=(str(log), n)) for n in range(TASKS)]
        app.send_many(messages, queue=queue, want_result=False)
        wait_until(lambda: len(self.executions()) >= LOSE_AFTER, timeout=120, what=f"{LOSE_AFTER} tasks done")
        self.failed_at = time.time()

    def executions(self) -> list[tuple[int, float]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().split("\n")[:-1]  # the last line may be half-written
        return [(int(number), float(at)) for number, at in (line.split() for line in lines)]

    def wait_all_run(self) -> None:
        wait_until(lambda: {n for n, _ in self.executions()} == set(range(TASKS)), timeout=300, interval=0.2,
                   what=f"all {TASKS} tasks run")

    def report(self) -> DrainReport:
        runs = self.executions()
        counts = collections.Counter(n for n, _ in runs)
        before = [at for _, at in runs if at <= self.failed_at]
        after = sorted(at for _, at in runs if at > self.failed_at)
        edges = [max(before), *after]
        pause, resumed = max(((b - a), b) for a, b in zip(edges, edges[1:]))
        return DrainReport(
            tasks=TASKS,
            lost=len(set(range(TASKS)) - set(counts)),
            duplicates=sum(count - 1 for count in counts.values()),
            rate=len(before) / max(self.failed_at - self.sent_at, 1e-9),
            pause=pause,
            resumed_after=resumed - self.failed_at,
        )
