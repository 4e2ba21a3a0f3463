"""What the state store keeps about one task: plain data, no I/O.

A record is a flat map of fields (merged by each write, so a write names only what changed)
plus a timeline, one entry per state the task entered. The backends store both as they
come (msgpack values), so this module is the one place that knows what the fields mean.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from taskq.message import Reply, decode_reply, unpack


class TaskState(str, enum.Enum):
    """Where a task is; a ``str`` so it compares equal to its name in JSON and on the CLI."""

    #: No record: not received by a worker yet, an id never sent, or expired after the retention.
    PENDING = "PENDING"
    #: Taken off its queue but not run: early for its eta, it went round the delay cascade again.
    RECEIVED = "RECEIVED"
    #: A worker is running it (again, after a redelivery: see the timeline's ``redelivered``).
    STARTED = "STARTED"
    #: A run failed and its retry rules sent it again; ``error`` is that run's failure.
    RETRYING = "RETRYING"
    #: A run returned; ``get()`` gives its value (none with ``ignore_result``).
    SUCCEEDED = "SUCCEEDED"
    #: A run failed for good (raised, or hit its hard time limit); parked in ``<queue>.dead``.
    FAILED = "FAILED"
    #: Parked in ``<queue>.dead`` without a failed run: expired, unknown task, worker error,
    #: or a state the worker could not record (``state-store-unavailable``).
    DEAD_LETTERED = "DEAD_LETTERED"
    #: Acked without running, by a middleware's ``Skip`` (a revoked task).
    REVOKED = "REVOKED"

    @property
    def final(self) -> bool:
        """Whether the task is done with: no worker will run it again unless an operator replays it."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD_LETTERED, TaskState.REVOKED})


@dataclass(frozen=True)
class TimelineEntry:
    """One state a task entered: when, at which attempt, on which worker (``host:pid``)."""

    state: TaskState
    at: float  #: epoch seconds
    attempt: int = 0
    worker: str = ""
    detail: str = ""  #: the dead-letter reason, the failure's type, ...
    redelivered: bool = False  #: the broker handed the message out before (a worker died holding it)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> TimelineEntry:
        at = fields.get("at")
        return cls(state=state_named(fields.get("state")), at=float(at) if isinstance(at, (int, float)) else 0.0,
                   attempt=integer(fields.get("attempt")), worker=str(fields.get("worker") or ""),
                   detail=str(fields.get("detail") or ""), redelivered=bool(fields.get("redelivered")))

    def to_fields(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"state": self.state.value, "at": self.at, "attempt": self.attempt,
                                 "worker": self.worker}
        if self.detail:
            entry["detail"] = self.detail
        if self.redelivered:
            entry["redelivered"] = True
        return entry


@dataclass(frozen=True)
class TaskRecord:
    """Everything the store knows about one task id."""

    id: str
    state: TaskState
    task: str = ""  #: the task's name
    queue: str = ""
    attempts: int = 0  #: the attempt of the last run: 1 for the first
    worker: str = ""  #: ``host:pid`` of the last worker that touched it
    received_at: float | None = None  #: epoch seconds of each, the latest run's
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    progress: float | None = None  #: 0.0 to 1.0, from ``taskq.current().progress()``
    meta: Mapping[str, Any] = field(default_factory=dict)  #: the keywords of the last ``progress()``
    reason: str = ""  #: why it was dead-lettered (docs/wire-format.md's reason codes)
    detail: str = ""
    ignore_result: bool = False
    reply: bytes | None = None  #: the encoded Reply: the value, or the failure and its traceback
    message: bytes | None = None  #: the task message's body: its arguments
    timeline: tuple[TimelineEntry, ...] = ()

    @classmethod
    def from_fields(cls, task_id: str, fields: Mapping[str, Any],
                    timeline: Iterable[Mapping[str, Any]] = ()) -> TaskRecord:
        def number(name: str) -> float | None:
            value = fields.get(name)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        meta = fields.get("meta")
        reply, message = fields.get("reply"), fields.get("message")
        return cls(
            id=task_id, state=state_named(fields.get("state")), task=str(fields.get("task") or ""),
            queue=str(fields.get("queue") or ""), attempts=integer(fields.get("attempts")),
            worker=str(fields.get("worker") or ""), received_at=number("received_at"),
            started_at=number("started_at"), finished_at=number("finished_at"), updated_at=number("updated_at"),
            progress=number("progress"), meta=meta if isinstance(meta, dict) else {},
            reason=str(fields.get("reason") or ""), detail=str(fields.get("detail") or ""),
            ignore_result=bool(fields.get("ignore_result")),
            reply=bytes(reply) if isinstance(reply, (bytes, bytearray)) else None,
            message=bytes(message) if isinstance(message, (bytes, bytearray)) else None,
            timeline=tuple(TimelineEntry.from_fields(entry) for entry in timeline if isinstance(entry, Mapping)),
        )

    def outcome(self) -> Reply | None:
        """The decoded reply (value or failure), or None: not finished, or ``ignore_result``."""
        if self.reply is None:
            return None
        return decode_reply(self.id, self.reply)

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """The task's ``args`` and ``kwargs``, as its message carried them (empty if not kept)."""
        if not self.message:
            return [], {}
        try:
            payload = unpack(self.message)
        except Exception:  # kept as received: a body the worker refused is not ours to trust
            return [], {}
        if not isinstance(payload, dict):
            return [], {}
        args, kwargs = payload.get("args"), payload.get("kwargs")
        return (list(args) if isinstance(args, list) else []), (dict(kwargs) if isinstance(kwargs, dict) else {})


def as_json(record: TaskRecord) -> dict[str, Any]:
    """The record as JSON-able data, for ``taskq result --json`` and the dashboard's task page."""
    args, kwargs = record.arguments()
    try:
        reply = record.outcome()
    except Exception:  # a reply that can't be decoded: show the rest of the record
        reply = None
    return {
        "id": record.id, "task": record.task, "queue": record.queue, "state": record.state.value,
        "final": record.state.final, "attempts": record.attempts, "worker": record.worker,
        "progress": record.progress, "meta": dict(record.meta), "received_at": record.received_at,
        "started_at": record.started_at, "finished_at": record.finished_at, "updated_at": record.updated_at,
        "args": args, "kwargs": kwargs, "reason": record.reason, "detail": record.detail,
        "ignore_result": record.ignore_result,
        "result": reply.result if reply is not None and reply.ok else None,
        "error": None if reply is None or reply.ok else {"type": reply.exc_type, "message": reply.exc_message,
                                                          "traceback": reply.traceback},
        "timeline": [entry.to_fields() for entry in record.timeline],
    }


def state_named(name: Any) -> TaskState:
    """A stored state's name as the enum; an unknown name (a newer taskq wrote it) reads as PENDING."""
    try:
        return TaskState(name)
    except ValueError:
        return TaskState.PENDING


def integer(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def pending(task_id: str) -> TaskRecord:
    """What an id the store has no record of reads as (as Celery does)."""
    return TaskRecord(id=task_id, state=TaskState.PENDING)
