"""The small interface every system runner implements, so ``bench.compare`` treats them alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bench.common import WorkerProcesses

#: Every system's no-op task takes an optional ``mark`` path (see ``bench.common.record_mark``);
#: un-marked messages carry no argument, so they are as small as the framework makes them.
NOOP_DOC = "Does nothing; if given a mark path, records the time there (first/last pre-loaded task)."


class System(Protocol):
    """One framework, set up with the shared settings (durable queue, persistent messages,
    prefetch 1, ack after the task, 2 worker processes, JSON bodies)."""

    #: Row label in the table.
    name: str
    #: Queue the no-op task goes to; the harness reads its depth and purges it.
    queue: str
    #: Settings worth printing under the table (what "identical" meant for this system).
    notes: list[str]
    #: Extra enqueue-only rows: label -> function publishing n messages (e.g. kombu without
    #: publisher confirms, taskq's bulk ``map``). May be empty.
    reference_enqueues: dict[str, Callable[[int], None]]

    def enqueue(self, n: int) -> None:
        """Publish *n* no-op tasks from this thread, one ``.delay()`` (or equivalent) at a time."""

    def preload(self, n: int, first_mark: str, last_mark: str) -> None:
        """Publish *n* no-op tasks, the first and last carrying the mark paths; the fastest way
        the system offers (this is setup, not measured)."""

    def start_workers(self, log_path: Path) -> WorkerProcesses:
        """Spawn the system's worker command(s) with 2 task-running processes; return at once."""

    def rpc_roundtrips(self, n: int) -> list[float]:
        """Do *n* sequential call-and-wait-for-result round trips; return each one's seconds."""

    def stop(self) -> None:
        """Stop workers (gracefully), close client connections and delete every queue/exchange the
        system declared. Safe to call more than once and after a failure."""
