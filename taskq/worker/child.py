"""One worker child: a connection with prefetch=1, one task at a time, ack after the run.

Two threads, one rule: the main thread owns the connection (it alone reads, publishes
and acks, because AMQP channels are not thread-safe); the task runs on a second thread.
While a task runs, the main thread keeps reading the socket and answering heartbeats, so
a task longer than the heartbeat timeout is not cut off and handed to another worker.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import structlog
from kombu import Connection, Consumer

from taskq import events, routing, topology
from taskq.app import App
from taskq.broker import publish_on
from taskq.message import InvalidMessage, TaskMessage, decode_task
from taskq.worker.execution import run_task

log = structlog.get_logger("taskq.worker")

TICK = 1.0  # seconds between checks of the stop flag and heartbeats while idle


@dataclass
class Delivery:
    """A message received by the consumer callback, waiting for the main loop to handle it."""

    queue: str
    message: Any  # kombu.Message


class ChildWorker:
    """Consumes from the given queues until told to stop; survives broker restarts."""

    def __init__(self, app: App, queue_names: list[str], tick: float = TICK) -> None:
        self.app = app
        self.queue_names = queue_names
        self.tick = tick
        self.stopping = False
        # Incremented each time a wait for messages comes back empty-handed; lets an
        # in-process test worker tell "idle" without racing the consumer (testing.py).
        self.idle_ticks = 0
        self._inbox: list[Delivery] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskq-task")

    # -- lifecycle -----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM once: finish the current task, ack, exit 0. Twice: exit at once.

        SIGINT is ignored: a Ctrl-C in a terminal reaches the whole process group, and
        the supervisor turns it into the one SIGTERM each child should get.
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.stopping:
            os._exit(1)  # the broker requeues whatever we held
        self.stopping = True

    def run(self) -> int:
        backoff = 0.5
        while not self.stopping:
            connection = self.app.broker.connect(heartbeat=self.app.heartbeat)
            try:
                connection.ensure_connection(max_retries=1)
                backoff = 0.5
                self._serve(connection)
            except self.app.broker.connection_errors as exc:
                log.warning(
                    "broker connection lost, reconnecting",
                    broker=self.app.broker.masked_url,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(backoff, 1),
                )
                self._sleep_unless_stopping(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                connection.collect()
        self._executor.shutdown(wait=True)
        return 0

    def _sleep_unless_stopping(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    # -- consuming -----------------------------------------------------------------------

    def _serve(self, connection: Connection) -> None:
        consume_channel = connection.channel()
        # Prefetch 1 per channel (global) *and* per consumer, before consuming starts:
        # RabbitMQ then never hands this child a second message while one is unacked,
        # whichever of its queues it comes from, and list_consumers shows prefetch 1.
        # (Positional arguments: py-amqp and kombu's virtual transports name the flag differently.)
        consume_channel.basic_qos(0, 1, True)
        consume_channel.basic_qos(0, 1, False)
        publish_channel = connection.channel()
        consumers = []
        for name in self.queue_names:
            queue = self.app.queue(name)(consume_channel)
            queue.declare()
            topology.dead_letter_queue(name)(consume_channel).declare()
            consumer = Consumer(
                consume_channel, queues=[queue], on_message=self._receiver(name), no_ack=False, auto_declare=False
            )
            consumer.consume()
            consumers.append(consumer)
        events.attach(connection)
        log.info("consuming", queues=self.queue_names, pid=os.getpid())
        while not self.stopping:
            events.tick()
            if self._inbox:
                self._handle(connection, publish_channel, self._inbox.pop(0))
                continue
            try:
                connection.drain_events(timeout=self.tick)
            except socket.timeout:
                self.idle_ticks += 1
                connection.heartbeat_check()
        for consumer in consumers:
            consumer.cancel()
        # A message delivered before the cancel reached the broker was never started:
        # hand it back so another worker runs it now.
        for delivery in self._inbox:
            delivery.message.requeue()
        self._inbox.clear()
        events.detach()
        connection.release()

    def _receiver(self, queue_name: str):
        def receive(message: Any) -> None:
            self._inbox.append(Delivery(queue_name, message))

        return receive

    def _handle(self, connection: Connection, publish_channel: Any, delivery: Delivery) -> None:
        message = delivery.message
        try:
            task_message = routing.address(
                decode_task(message.body, message.content_type, message.headers, message.properties), delivery.queue
            )
            if task_message.task not in self.app.tasks:
                raise InvalidMessage("unknown-task", f"no task named {task_message.task!r} in app {self.app.name}")
        except InvalidMessage as exc:
            self._dead_letter(publish_channel, connection, delivery, exc.reason, exc.detail)
            return
        events.task_received(task_message, delivery.queue)
        if task_message.is_expired():
            self._dead_letter(publish_channel, connection, delivery, "expired", "arrived after its expiry time")
            return
        self._run(connection, publish_channel, delivery, task_message)

    def _run(self, connection: Connection, publish_channel: Any, delivery: Delivery, task_message: TaskMessage) -> None:
        task = self.app.tasks[task_message.task]
        events.task_started(task_message, delivery.queue)
        bound = log.bind(task=task.name, task_id=task_message.id, queue=delivery.queue, attempt=task_message.attempts + 1)
        bound.info("task started")
        future = self._executor.submit(run_task, task, task_message, delivery.queue)
        while True:
            try:
                outcome = future.result(timeout=TICK)
                break
            except FutureTimeout:
                keep_connection_alive(connection)
        events.task_finished(
            task_message, delivery.queue, outcome.reply.ok, outcome.runtime, outcome.reply.exc_type, outcome.reply.exc_message
        )
        if outcome.reply.ok:
            bound.info("task succeeded", runtime=round(outcome.runtime, 6))
        else:
            bound.warning(
                "task failed",
                runtime=round(outcome.runtime, 6),
                exc_type=outcome.reply.exc_type,
                exc_message=outcome.reply.exc_message,
            )
        if task_message.reply_to and not task.options.ignore_result:
            # Reply before ack: if we die in between, the task runs again and replies
            # again (at least once) rather than leaving the caller waiting forever.
            publish_on(
                connection,
                outcome.body,
                routing_key=task_message.reply_to,
                persistent=False,
                correlation_id=task_message.id,
                channel=publish_channel,
            )
        delivery.message.ack()

    def _dead_letter(self, publish_channel: Any, connection: Connection, delivery: Delivery, reason: str, detail: str) -> None:
        """Park an unrunnable message in ``<queue>.dead`` with the reason, then ack it.

        Publish-then-ack with confirms means the message is never in neither place; it
        may, after a crash in between, be in both, which an operator can see.
        """
        message = delivery.message
        headers = dict(message.headers or {})
        headers.update({"reason": reason, "detail": detail, "original_queue": delivery.queue})
        properties = {
            key: message.properties[key]
            for key in ("correlation_id", "reply_to", "message_id")
            if message.properties.get(key)
        }
        publish_on(
            connection,
            message.body,
            routing_key=topology.dead_letter_queue_name(delivery.queue),
            headers=headers,
            channel=publish_channel,
            # Kept as it came, so a replay is the very message that failed.
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            **properties,
        )
        message.ack()
        events.task_dead_lettered(delivery.queue, reason, detail, message.headers)
        log.error(
            "message dead-lettered",
            task=headers.get("task"),
            task_id=headers.get("id"),
            reason=reason,
            detail=detail,
            queue=delivery.queue,
            dead_letter_queue=topology.dead_letter_queue_name(delivery.queue),
        )


def keep_connection_alive(connection: Connection) -> None:
    """Read whatever the broker sent (its heartbeats among it) and send ours if due; publish
    the running task's log lines and our status heartbeat (events.tick)."""
    try:
        while True:
            connection.drain_events(timeout=0.01)
    except socket.timeout:
        pass
    connection.heartbeat_check()
    events.tick()


def child_main(app: App, queue_names: list[str]) -> None:
    """Entry point of a forked child process."""
    app.forget_connections_after_fork()
    events.install(app, queue_names)
    worker = ChildWorker(app, queue_names)
    worker.install_signal_handlers()
    # The supervisor forked us with stop signals blocked; any that arrived meanwhile are
    # delivered now, to our own handlers.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    os._exit(worker.run())
