"""Lifecycle events and log broadcasting as middleware: the worker child's Broadcaster
(taskq/events.py), called at the pipeline's hooks instead of from inside the worker loop."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import structlog

from taskq import context, topology
from taskq.events import (
    BATCH_ENV,
    BROADCAST_ENV,
    DEFAULT_BATCH,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_HEARTBEAT_INTERVAL,
    FLUSH_INTERVAL_ENV,
    HEARTBEAT_INTERVAL_ENV,
    Broadcaster,
    number_from_env,
    task_fields,
)
from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Retry
from taskq.middleware.pipeline import Middleware, WorkerInfo

if TYPE_CHECKING:
    from kombu import Connection


class LifecycleEvents(Middleware):
    """``task.*`` and ``worker.*`` events and the child's log lines, out on the broker (docs/events.md)."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self._stop_listening: Callable[[], None] | None = None

    @classmethod
    def from_env(cls, app_name: str, queue_names: list[str]) -> LifecycleEvents:
        """Intervals, batch size and the on/off switch from the ``TASKQ_*`` variables (docs/configuration.md)."""
        return cls(Broadcaster(
            app_name,
            queue_names,
            heartbeat_interval=number_from_env(HEARTBEAT_INTERVAL_ENV, DEFAULT_HEARTBEAT_INTERVAL, 0.1),
            flush_interval=number_from_env(FLUSH_INTERVAL_ENV, DEFAULT_FLUSH_INTERVAL, 0.0),
            batch=int(number_from_env(BATCH_ENV, DEFAULT_BATCH, 1)),
            broadcast=os.environ.get(BROADCAST_ENV, "on").lower() not in ("off", "0", "false", "no"),
        ))

    def on_worker_start(self, worker: WorkerInfo) -> None:
        """Broadcast this process's log records: the processor goes just before the renderer, so a
        broadcast record has the level, timestamp, task context and formatted exception the local line has."""
        processors = list(structlog.get_config()["processors"])
        processors.insert(max(len(processors) - 1, 0), self.broadcaster.log_processor)
        structlog.configure(processors=processors)
        self._stop_listening = context.listen(self._progress)

    def on_worker_stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    def _progress(self, running: context.TaskContext, fraction: float | None, meta: dict[str, Any]) -> None:
        """``taskq.current().progress()``, from the task's thread: the broadcaster takes events from any."""
        self.broadcaster.emit("task.progress", progress=fraction, meta=meta,
                              **task_fields(running.message, running.queue))

    def on_connect(self, connection: Connection) -> None:
        self.broadcaster.attach(connection)

    def on_disconnect(self) -> None:
        self.broadcaster.detach()

    def on_tick(self) -> None:
        self.broadcaster.tick()

    def on_received(self, delivery: Delivery) -> None:
        if delivery.envelope is not None:
            self.broadcaster.task_received(delivery.envelope, delivery.queue)

    def on_task_start(self, delivery: Delivery) -> None:
        if delivery.envelope is not None:
            self.broadcaster.task_started(delivery.envelope, delivery.queue)

    def on_task_succeeded(self, delivery: Delivery) -> None:
        self._finished(delivery)

    def on_task_failed(self, delivery: Delivery) -> None:
        self._finished(delivery)

    def _finished(self, delivery: Delivery) -> None:
        outcome = delivery.outcome
        if delivery.envelope is not None and outcome is not None:
            self.broadcaster.task_finished(delivery.envelope, delivery.queue, outcome.reply.ok, outcome.runtime,
                                           outcome.reply.exc_type, outcome.reply.exc_message)

    def on_settled(self, delivery: Delivery, decision: Decision) -> None:
        if isinstance(decision, Retry) and delivery.envelope is not None:
            reply = delivery.outcome.reply if delivery.outcome is not None else None
            self.broadcaster.emit("task.retried", delay=round(decision.countdown, 3),
                                  exc_type=reply.exc_type if reply else "", exc_message=reply.exc_message if reply else "",
                                  **task_fields(delivery.envelope, delivery.queue))
        elif isinstance(decision, DeadLetter):
            headers = decision.headers or {}
            self.broadcaster.emit(
                "task.dead_lettered",
                queue=delivery.queue,
                dead_letter_queue=topology.dead_letter_queue_name(delivery.queue),
                reason=decision.reason,
                detail=decision.detail,
                task=headers.get("task"),
                task_id=headers.get("id"),
            )
