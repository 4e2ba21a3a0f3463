"""What one ``taskq logs`` does with the records it receives: filter, render, count the gaps.

The workers broadcast every line (taskq.events); each follower picks what its operator
asked for and says which lines it missed, from each worker process's sequence numbers.
"""

from __future__ import annotations

import json
from typing import IO, Any

import structlog

from taskq.logs import LEVELS
from taskq.subscriber import GapCounter, records


class LogPrinter:
    """Filters and writes the records one ``taskq logs`` receives, and counts what it missed."""

    def __init__(self, out: IO[str], err: IO[str], *, app_name: str | None, level: str, task: str | None,
                 as_json: bool, colors: bool) -> None:
        self.out = out
        self.err = err  # where a gap is said, apart from the lines themselves
        self.app_name = app_name
        self.min_level = LEVELS.index(level)
        self.task = task
        self.as_json = as_json
        self.renderer = structlog.dev.ConsoleRenderer(colors=colors)
        self.gaps = GapCounter()
        self.received = 0

    def __call__(self, message: Any) -> None:
        for record in records(message):
            self.write(record)
        self.out.flush()

    def write(self, record: dict[str, Any]) -> None:
        if self.app_name and record.get("app") != self.app_name:
            return
        self.received += 1
        missed = self.gaps.see((record.get("host", "?"), record.get("pid", 0)), record.get("seq"))
        if missed:
            self.err.write(f"taskq logs: missed {missed} lines from {record.get('host')} pid {record.get('pid')}\n")
            self.err.flush()
        if self.task and record.get("task") != self.task:
            return
        level = record.get("level", "info")
        if level in LEVELS and LEVELS.index(level) < self.min_level:
            return
        line = json.dumps(record) if self.as_json else self.renderer(None, level, dict(record))
        self.out.write(line + "\n")
