"""``app.result(task_id)``: a task's state and result read from the store, in any process.

The handle reads the record once when made (``refresh()`` reads it again), so a web
request that asks "how far is job X" makes one read. ``get()`` polls until the task is
done: the store is a database, not a channel, and polling with a growing pause (capped at
``GET_POLL_MAX``) costs an idle caller a read every half second at most. The sender's own
``AsyncResult.get()`` keeps the RPC reply, which arrives without polling.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from taskq import settings
from taskq.backoff import jittered_backoff
from taskq.errors import REVOKED_EXC_TYPE, TaskError, TaskqError, TaskRevoked, remote_error
from taskq.state.records import TaskRecord, TaskState, TimelineEntry, pending
from taskq.state.store import StateStore


class StoredResult:
    """One task's record in the state store: ``state``, ``progress``, ``meta``, ``attempts``,
    timestamps, ``timeline``, and ``get()`` for its value."""

    def __init__(self, store: StateStore, task_id: str) -> None:
        if not isinstance(task_id, str) or not task_id:
            raise TaskqError(f"a task id is a non-empty string, not {task_id!r}")
        self.id = task_id
        self._store = store
        self.record: TaskRecord = pending(task_id)
        self.refresh()

    def __repr__(self) -> str:
        return f"<StoredResult {self.record.task or '?'}[{self.id}] {self.state.value}>"

    def refresh(self) -> StoredResult:
        """Read the record again (StateStoreError if the store can't be reached)."""
        self.record = self._store.read(self.id) or pending(self.id)
        return self

    # -- what the record says ---------------------------------------------------------------

    @property
    def state(self) -> TaskState:
        return self.record.state

    @property
    def progress(self) -> float | None:
        return self.record.progress

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.record.meta

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def received_at(self) -> float | None:
        return self.record.received_at

    @property
    def started_at(self) -> float | None:
        return self.record.started_at

    @property
    def finished_at(self) -> float | None:
        return self.record.finished_at

    @property
    def updated_at(self) -> float | None:
        return self.record.updated_at

    @property
    def worker(self) -> str:
        return self.record.worker

    @property
    def timeline(self) -> tuple[TimelineEntry, ...]:
        return self.record.timeline

    def ready(self) -> bool:
        """Whether the task is done with (succeeded, failed, dead-lettered or revoked), as last read."""
        return self.state.final

    # -- the value ----------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Any:
        """The task's return value; TaskError if it failed (the remote traceback included),
        was dead-lettered or revoked; TimeoutError if it is not done within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        polls = 0
        while not self.refresh().ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(self._not_done(timeout))
            pause = jittered_backoff(polls, first=settings.RESULT_GET_POLL_FIRST, cap=settings.RESULT_GET_POLL_MAX)
            time.sleep(pause if remaining is None else min(pause, remaining))
            polls += 1
        return self._value()

    def _value(self) -> Any:
        record = self.record
        reply = record.outcome()
        if record.state is TaskState.SUCCEEDED:
            if reply is None:
                raise TaskqError(f"task {record.task}[{self.id}] was sent with ignore_result: "
                                 "its state is kept, not its value")
            if reply.ok:
                return reply.result
        if reply is not None and not reply.ok:
            raise remote_error(reply.exc_type, reply.exc_message, reply.traceback, task_id=self.id)
        if record.state is TaskState.REVOKED:
            raise TaskRevoked(REVOKED_EXC_TYPE, record.detail or "skipped without running", task_id=self.id)
        raise TaskError("taskq.DeadLettered", f"{record.reason}: {record.detail}", task_id=self.id)

    def _not_done(self, timeout: float | None) -> str:
        if self.state is TaskState.PENDING:
            hours = self._store.retention / 3600
            return (f"no result for task {self.id} within {timeout} s: the state store ({self._store.masked_url}) "
                    f"has no record of it (PENDING): no worker has taken it yet, the id was never sent, "
                    f"or its record expired after the retention of {hours:g} h")
        return f"no result for task {self.id} within {timeout} s: it is {self.state.value} (attempt {self.attempts})"
