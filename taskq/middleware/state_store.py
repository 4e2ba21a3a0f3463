"""Recording each task's state in the app's state store, from the worker, before the ack.

``App(results=URL)`` adds this middleware. Two writes per run: STARTED in ``before_run``
(so a message whose state can't be recorded is not run), and the outcome (SUCCEEDED,
RETRYING, FAILED, ...) in ``before_settle``, which runs before the settler replies,
publishes and acks. So SUCCEEDED is written only once a run returned, and a caller whose
RPC ``get()`` returned finds it in the store. The one window: a worker killed between
that write and the ack leaves SUCCEEDED and a redelivery; the next worker's STARTED write
moves the state back, honestly, before the task runs again (docs/guarantees.md).

A write the store refuses is retried with backoff (``taskq.backoff``); when the attempts
run out the message is dead-lettered with reason ``state-store-unavailable`` instead of
acked: kept, visible, replayable once the store is back (docs/results.md says why).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

import structlog

from taskq import context, settings
from taskq.backoff import jittered_backoff
from taskq.errors import EncodeError, StateStoreError
from taskq.message import Reply
from taskq.middleware.delivery import (
    DeadLetter, Decision, Delivery, Redelay, Retry, Skip, Succeeded, dead_letter_reply, failure,
)
from taskq.middleware.pipeline import Middleware, WorkerInfo
from taskq.state.records import TaskState, TimelineEntry
from taskq.state.store import StateStore

log = structlog.get_logger("taskq.worker")

#: The dead-letter reason of a message whose state the worker could not record.
STATE_STORE_UNAVAILABLE = "state-store-unavailable"


class StateRecorder(Middleware):
    """Writes each task's state to the store ``store()`` opens (in the worker child, once)."""

    def __init__(self, store: Callable[[], StateStore], *, write_attempts: int = settings.STATE_WRITE_ATTEMPTS,
                 backoff_first: float = settings.STATE_WRITE_BACKOFF_FIRST, backoff_max: float = settings.STATE_WRITE_BACKOFF_MAX,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        if write_attempts < 1:
            raise ValueError("write_attempts must be at least 1")
        self.store = store
        self.write_attempts = write_attempts
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._clock = clock
        self.worker = f"{socket.gethostname()}:?"
        self._running: str | None = None  #: the id of the task this worker runs now (for progress)
        self._record: dict[str, Any] | None = None  #: its record, as last written
        self._lock = threading.Lock()
        self._stop_listening: Callable[[], None] | None = None

    # -- worker lifecycle --------------------------------------------------------------------

    def on_worker_start(self, worker: WorkerInfo) -> None:
        self.worker = f"{socket.gethostname()}:{worker.pid}"
        self._stop_listening = context.listen(self._progress)

    def on_worker_stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        try:
            self.store().close()
        except Exception:  # never opened, or broken: nothing to let go of
            pass

    # -- per message -------------------------------------------------------------------------

    def before_run(self, delivery: Delivery) -> Decision | None:
        """STARTED, before the run: a redelivered message's state moves back here too."""
        envelope = delivery.envelope
        if envelope is None or delivery.task is None:
            return None
        now = self._clock()
        redelivered = bool((getattr(delivery.message, "delivery_info", None) or {}).get("redelivered"))
        record = self._fresh_record(delivery, now)
        record.update(state=TaskState.STARTED.value, started_at=now)
        entry = TimelineEntry(TaskState.STARTED, now, delivery.attempt, self.worker, redelivered=redelivered)
        problem = self._write(envelope.id, record, entry)
        if problem is not None:
            return DeadLetter("state-store-unavailable", problem,
                              reply=dead_letter_reply(envelope, f"{STATE_STORE_UNAVAILABLE}: {problem}"))
        with self._lock:
            self._running, self._record = envelope.id, record
        return None

    def before_settle(self, delivery: Delivery, decision: Decision) -> Decision | None:
        """The outcome, before the ack; a dead letter instead of the ack if it can't be recorded."""
        envelope = delivery.envelope
        with self._lock:  # a progress() on the task's thread can't interleave from here on
            started = self._record if self._running is not None and envelope is not None \
                and self._running == envelope.id else None
            self._running, self._record = None, None
        if envelope is None:  # no id to file it under (an undecodable message)
            return None
        if isinstance(decision, DeadLetter) and decision.reason == STATE_STORE_UNAVAILABLE:
            return None  # the store just failed us: don't wait on it a second time
        now = self._clock()
        state, fields, detail = self._outcome(delivery, decision)
        record = dict(started) if started is not None else self._fresh_record(delivery, now)
        record.update(fields, state=state.value, updated_at=now)
        if state.final:
            record["finished_at"] = now
        entry = TimelineEntry(state, now, delivery.attempt, self.worker, detail=detail)
        problem = self._write(envelope.id, record, entry)
        if problem is None or isinstance(decision, DeadLetter):
            return None  # recorded; or parked in .dead anyway, under its own reason
        return DeadLetter("state-store-unavailable", problem,
                          reply=dead_letter_reply(envelope, f"{STATE_STORE_UNAVAILABLE}: {problem}"),
                          attempts=delivery.attempt if delivery.outcome is not None else None,
                          failure=delivery.outcome.reply if delivery.outcome and not delivery.outcome.reply.ok else None)

    # -- helpers -----------------------------------------------------------------------------

    def _outcome(self, delivery: Delivery, decision: Decision) -> tuple[TaskState, dict[str, Any], str]:
        """The state a decision puts the task in, the fields to write, and the timeline's detail."""
        assert delivery.envelope is not None
        outcome = delivery.outcome
        if isinstance(decision, Succeeded) and outcome is not None:
            if delivery.task is not None and delivery.task.options.ignore_result:
                return TaskState.SUCCEEDED, {}, ""
            try:
                body = outcome.body or outcome.reply.body()  # not encoded when no caller waits
            except EncodeError as exc:  # the value can't be carried: nobody could get() it
                return TaskState.FAILED, {"reply": failure(delivery.envelope.id, exc).body()}, "EncodeError"
            return TaskState.SUCCEEDED, {"reply": body}, ""
        if isinstance(decision, Retry):
            reply = outcome.reply if outcome is not None else None
            return TaskState.RETRYING, {"reply": reply.body()} if reply else {}, failure_detail(reply)
        if isinstance(decision, DeadLetter):
            fields: dict[str, Any] = {"reason": decision.reason, "detail": decision.detail}
            if decision.failure is not None:
                fields["reply"] = decision.failure.body()
                return TaskState.FAILED, fields, decision.reason
            reply = decision.reply or dead_letter_reply(delivery.envelope, f"{decision.reason}: {decision.detail}")
            fields["reply"] = reply.body()
            revoked = decision.reason == "revoked"  # taskq/middleware/revocation.py: parked, but on purpose
            return TaskState.REVOKED if revoked else TaskState.DEAD_LETTERED, fields, decision.reason
        if isinstance(decision, Redelay):
            return TaskState.RECEIVED, {}, "eta"
        if isinstance(decision, Skip):
            return TaskState.REVOKED, {"detail": decision.reason}, decision.reason
        return TaskState.SUCCEEDED, {}, ""  # Succeeded without an outcome: nothing ran, nothing to keep

    def _fresh_record(self, delivery: Delivery, now: float) -> dict[str, Any]:
        """The whole record of this delivery as this worker sees it: each write replaces the
        stored one, so the worker never reads the store back (one round trip per write)."""
        assert delivery.envelope is not None
        return {
            "task": delivery.envelope.task, "queue": delivery.queue, "attempts": delivery.attempt,
            "worker": self.worker, "received_at": now - max(0.0, time.monotonic() - delivery.received_at),
            "updated_at": now, "ignore_result": bool(delivery.task and delivery.task.options.ignore_result),
            "message": delivery.body,
        }

    def _write(self, task_id: str, fields: dict[str, Any], entry: TimelineEntry) -> str | None:
        """Write, retrying with backoff; None once written, else what failed (the last attempt's error)."""
        problem = ""
        for attempt in range(self.write_attempts):
            try:
                self.store().write(task_id, fields, entry.to_fields())
                return None
            except Exception as exc:  # StateStoreError, or a backend's bug: either way not recorded
                problem = str(exc) if isinstance(exc, StateStoreError) else f"{type(exc).__name__}: {exc}"
            if attempt + 1 < self.write_attempts:
                pause = jittered_backoff(attempt, first=self.backoff_first, cap=self.backoff_max)
                log.warning("state store write failed, retrying", task_id=task_id, state=fields.get("state"),
                            attempt=attempt + 1, retry_in=round(pause, 2), error=problem)
                self._sleep(pause)
        log.error("state store unavailable: the message goes to its dead-letter queue", task_id=task_id,
                  state=fields.get("state"), attempts=self.write_attempts, error=problem)
        return problem

    def _progress(self, running: context.TaskContext, fraction: float | None, meta: dict[str, Any]) -> None:
        """From the task's thread: one attempt, no retry (context.progress logs a failure)."""
        with self._lock:  # the record, and the order of its writes, against before_settle
            if self._record is None or running.id != self._running:
                return  # not ours: another app's task, run by another in-process worker
            self._record.update(meta=meta, updated_at=self._clock())
            if fraction is not None:
                self._record["progress"] = fraction
            self.store().write(running.id, self._record)


def failure_detail(reply: Reply | None) -> str:
    return f"{reply.exc_type}: {reply.exc_message}" if reply is not None and not reply.ok else ""
