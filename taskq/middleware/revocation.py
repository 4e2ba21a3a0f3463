"""Revocation: a revoked task is dead-lettered (``revoked``) when a worker meets it, and a task
revoked with ``terminate=True`` while it runs is abandoned the way a hard time limit abandons
one (docs/revoke.md).

Each child reads the revocations on a channel of its own connection (``on_connect``), so
they arrive through the same reads that bring its tasks: the worker drains its connection
between messages and, while a task runs, its watchdog does. What was read before a task's
delivery was read is known at its ``before_run``.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from kombu import Consumer

from taskq import revocation, settings
from taskq.broker import publish_on
from taskq.errors import REVOKED_EXC_TYPE, TaskRevoked
from taskq.message import Reply
from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Outcome
from taskq.middleware.pipeline import Middleware, WorkerInfo

if TYPE_CHECKING:
    from kombu.connection import Connection

log = structlog.get_logger("taskq.worker")

REASON = "revoked"
#: What stops a running task: the worker reads ``Delivery.abandon`` (running.py's watchdog).
ABANDON = "revoked"
#: Transports that can carry a fanout to every child: RabbitMQ (its stream) and the embedded broker.
SUPPORTED = ("amqp", "sqlite")


class Revocations(Middleware):
    """Refuses revoked tasks at ``before_run``; marks the running one for abandoning on ``terminate``."""

    def __init__(self, window: float = settings.REVOKE_WINDOW, capacity: int = settings.REVOKE_CAPACITY) -> None:
        self.window = window
        self.revoked = revocation.RevokedIds(window, capacity)
        self._app_name = ""
        # The delivery whose task runs now, or ran last: replaced at each start, never cleared
        # (a terminate for a task already over then marks a delivery nobody reads again).
        self._running: Delivery | None = None
        self._marker: str | None = None  # the catch-up marker we wait for (_catch_up)

    def on_worker_start(self, worker: WorkerInfo) -> None:
        self._app_name = worker.app_name

    def on_connect(self, connection: Connection) -> None:
        """Read the app's revocations on a channel of our own: the stream from a window ago
        (RabbitMQ), or a private queue on the fanout (the embedded broker)."""
        driver = connection.transport.driver_type
        if driver not in SUPPORTED or not self._app_name:
            return
        channel = connection.channel()
        if driver == "amqp":
            channel.basic_qos(0, settings.REVOKE_PREFETCH, False)  # a stream consumer must have one
            queue = revocation.revocation_stream(self._app_name, self.window, revocation.stream_from(self.window))
        else:
            queue = revocation.listener_queue(self._app_name)
        bound = queue(channel)
        bound.declare()
        Consumer(channel, queues=[bound], on_message=self._on_message, no_ack=False, auto_declare=False).consume()
        if driver == "amqp":
            self._catch_up(connection, channel)

    def _catch_up(self, connection: Connection, channel: Any) -> None:
        """Read the stream's backlog before consuming tasks: a stream delivers asynchronously, so
        a restarted child could otherwise take a revoked task before reading its revocation.
        We append a marker of our own and read until it comes back: all before it was read."""
        marker = revocation.MARKER_PREFIX + uuid.uuid4().hex
        self._marker = marker
        publish_on(connection, revocation.Revocation(marker, False, time.time()).body(), channel=channel,
                   exchange=revocation.EXCHANGE_PREFIX + self._app_name, routing_key="", persistent=False)
        deadline = time.monotonic() + settings.REVOKE_CATCH_UP
        while self._marker is not None and time.monotonic() < deadline:
            try:
                connection.drain_events(timeout=min(settings.WORKER_TICK, settings.REVOKE_CATCH_UP))
            except socket.timeout:
                pass
        if self._marker is not None:
            log.warning("revocations not caught up: consuming anyway", waited=settings.REVOKE_CATCH_UP)
            self._marker = None

    def _on_message(self, message: Any) -> None:
        # Runs on whichever thread is reading the connection: the main one, or the watchdog
        # (holding the connection) while a task runs.
        message.ack()  # a stream keeps it anyway; the ack only gives the consumer credit
        try:
            revoked = revocation.Revocation.decode(message.body)
        except ValueError as exc:
            log.warning("ignored a malformed revocation", error=str(exc))
            return
        if revoked.task_id.startswith(revocation.MARKER_PREFIX):  # some child's catch-up marker
            if revoked.task_id == self._marker:
                self._marker = None
            return
        if not self.revoked.add(revoked):
            return
        log.info("revocation received", task_id=revoked.task_id, terminate=revoked.terminate)
        running = self._running
        if revoked.terminate and running is not None and running.envelope is not None \
                and running.envelope.id == revoked.task_id:
            log.warning("revoked with terminate: abandoning the running task", task_id=revoked.task_id)
            running.abandon = ABANDON

    def before_run(self, delivery: Delivery) -> DeadLetter | None:
        envelope = delivery.envelope
        if envelope is None or self.revoked.get(envelope.id) is None:
            return None
        detail = "revoked before it ran"
        return DeadLetter(REASON, detail, reply=revoked_reply(envelope.id, detail))

    def on_task_start(self, delivery: Delivery) -> None:
        self._running = delivery

    def decide_failure(self, delivery: Delivery) -> Decision | None:
        """A run abandoned on ``terminate`` is dead-lettered, never retried (first in the defaults)."""
        if delivery.abandon != ABANDON or delivery.outcome is None:
            return None
        return DeadLetter(REASON, "terminated while running", reply=delivery.outcome.reply,
                          attempts=delivery.attempt)


def revoked_reply(task_id: str, detail: str) -> Reply:
    """What the caller of a revoked task gets: ``get()`` raises ``taskq.TaskRevoked``."""
    return Reply(task_id=task_id, ok=False, exc_type=REVOKED_EXC_TYPE, exc_message=detail)


def abandoned_outcome(delivery: Delivery) -> Outcome:
    """What a run stopped on ``terminate`` ends in: TaskRevoked, as its caller's ``get()`` raises."""
    task_id = delivery.envelope.id if delivery.envelope is not None else ""
    reply = revoked_reply(task_id, "terminated while running")
    runtime = time.monotonic() - delivery.started_at if delivery.started_at is not None else 0.0
    exc = TaskRevoked(reply.exc_type, reply.exc_message, task_id=task_id)
    return Outcome(reply=reply, body=reply.body(), runtime=runtime, exception=exc)
