"""One worker child: a connection with prefetch=1, one task at a time, ack after the run.

One rule: only the thread holding the connection reads, publishes or acks (AMQP channels
are not thread-safe). In a forked child the task runs on the main thread, which lends
the connection to a watchdog thread for the task's duration, so a task longer than the
heartbeat timeout is not cut off and handed to another worker (watchdog.py). In an
in-process worker (testing.InlineWorker) the task runs on a second thread instead and
the main thread keeps the connection alive itself (``_wait_for_outcome``).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import structlog
from kombu import Connection, Consumer
from kombu.common import maybe_declare

from taskq import copies, delay, events, routing, topology
from taskq.app import App
from taskq.broker import REFUSALS, connection_problem, publish_on
from taskq.errors import BrokerError
from taskq.message import InvalidMessage, Reply, TaskMessage, decode_task, message_body
from taskq.worker import limits
from taskq.worker.execution import Outcome, run_task
from taskq.worker.parent_death import die_with_parent
from taskq.worker.settle import Settling, dead_letter_reply
from taskq.worker.watchdog import Watch, Watchdog

log = structlog.get_logger("taskq.worker")

TICK = 1.0  # seconds between checks of the stop flag and heartbeats while idle
RECONNECT_BACKOFF_MAX = 10.0  # seconds; the cap of the reconnect backoff (jittered)
#: The child's exit status when the broker itself is unusable: it refused our login or vhost
#: (broker.REFUSALS) REFUSED_ATTEMPTS times in a row (riding out a user or vhost being created
#: just now), or raised BrokerError (say, a damaged embedded broker file). Every child forked
#: would die the same way, so the supervisor stops the worker instead of starting another.
REFUSED_ATTEMPTS = 3
EXIT_BROKER_UNUSABLE = os.EX_CONFIG


@dataclass
class Delivery:
    """A message received by the consumer callback, waiting for the main loop to handle it."""

    queue: str
    message: Any  # kombu.Message

    @property
    def body(self) -> bytes:
        return message_body(self.message.body)


class ChildWorker(Settling):
    """Consumes from the given queues until told to stop; survives broker restarts.

    What becomes of each message after its run (reply, retry, dead letter, ack) is in
    settle.py, mixed in.
    """

    def __init__(self, app: App, queue_names: list[str], tick: float = TICK, owns_process: bool = False) -> None:
        self.app = app
        self.queue_names = queue_names
        self.tick = tick
        self.stopping = False
        # True in a forked child process (child_main): tasks run on the main thread under a
        # watchdog, and a hard time limit ends the process. An in-process worker
        # (testing.InlineWorker) must not end it, and can't arm the SIGALRM backstop from
        # a non-main thread either: its tasks run on a thread it can abandon.
        self.owns_process = owns_process
        # Incremented each time a wait for messages comes back empty-handed; lets an
        # in-process test worker tell "idle" without racing the consumer (testing.py).
        self.idle_ticks = 0
        self._inbox: list[Delivery] = []
        self._executor = limits.TaskThreads()
        self._watchdog = Watchdog(keep_connection_alive, period=tick / 2) if owns_process else None
        # A concrete logger for the per-task lines (made once logging is configured): the
        # module's lazy proxy builds a new logger on every call, 6% of a no-op task's time.
        self._task_log = log.bind()

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
        refusals = 0
        while not self.stopping:
            connection = self.app.broker.connect(heartbeat=self.app.heartbeat)
            try:
                try:
                    connection.ensure_connection(max_retries=1)
                except REFUSALS as exc:
                    refusals += 1
                    if refusals >= REFUSED_ATTEMPTS:
                        log.error("broker refused the connection: giving up", attempts=refusals,
                                  error=connection_problem(self.app.broker.masked_url, exc))
                        return EXIT_BROKER_UNUSABLE
                    raise
                backoff, refusals = 0.5, 0
                self._serve(connection)
            except self.app.broker.connection_errors as exc:
                # Deliveries of the dead channel can't be acked: the broker requeued them.
                self._inbox.clear()
                pause = random.uniform(backoff / 2, backoff)  # spread a fleet's reconnects
                log.warning(
                    "broker refused the connection, retrying" if refusals else "broker connection lost, reconnecting",
                    broker=self.app.broker.masked_url,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(pause, 1),
                )
                self._sleep_unless_stopping(pause)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)
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
        # Prefetch 1 per consumer, then per channel (global), before consuming starts:
        # RabbitMQ then never hands this child a second message while one is unacked,
        # whichever of its queues it comes from, and list_consumers shows prefetch 1.
        # In that order: a per-consumer basic.qos resets RabbitMQ's channel limit to 0
        # (unlimited). Quorum queues refuse a channel limit (NOT_IMPLEMENTED on consume),
        # so there it is one per queue; the embedded broker has only the channel's limit.
        # (Set for one queue too: dropping it there made no measurable difference.)
        # (Positional arguments: py-amqp and kombu's virtual transports name the flag differently.)
        consume_channel.basic_qos(0, 1, False)
        if self.app.queue_type == "classic":
            consume_channel.basic_qos(0, 1, True)
        publish_channel = connection.channel()
        self._reply_channel = connection.channel()
        # Retries and re-delays go through the cascade: declare it now (and mark it declared
        # for this connection) so a retry never waits on ~130 declarations.
        if self.app.broker_delays:
            maybe_declare(delay.DelayTopology(self.app.queue_type), publish_channel)
        consumers = []
        for name in self.queue_names:
            queue = self.app.queue(name)(consume_channel)
            queue.declare()
            self.app.dead_letter_queue(name)(consume_channel).declare()
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
        """Decide, run and settle one message; whatever goes wrong with it stays with it.

        A lost connection is the reconnect loop's business (the broker requeued the
        message). Any other error is this message's fault or ours, and raising it would
        end the child, whose replacement gets the same message: a crash loop. So the
        message is dead-lettered with the error, or, if even that fails, rejected into
        ``<queue>.dead`` by the broker's own dead-lettering.
        """
        try:
            self._decide(connection, publish_channel, delivery)
        except self.app.broker.connection_errors:
            raise
        except Exception as exc:
            self._contain(connection, publish_channel, delivery, exc)

    def _contain(self, connection: Connection, publish_channel: Any, delivery: Delivery, error: Exception) -> None:
        message = delivery.message
        detail = f"{type(error).__name__}: {error}"
        log.error("handling a message failed", queue=delivery.queue, error=detail, exc_info=error)
        if message.acknowledged:  # settled already: what failed came after the ack
            return
        try:
            self._dead_letter(publish_channel, connection, delivery, "worker-error", detail)
        except self.app.broker.connection_errors:
            raise
        except Exception as dead_letter_error:
            log.error("dead-lettering failed: rejecting the message into the dead-letter queue",
                      queue=delivery.queue, error=f"{type(dead_letter_error).__name__}: {dead_letter_error}")
            if not message.acknowledged:
                message.reject(requeue=False)

    def _decide(self, connection: Connection, publish_channel: Any, delivery: Delivery) -> None:
        message = delivery.message
        try:
            task_message = routing.address(
                decode_task(delivery.body, message.content_type, message.headers, message.properties), delivery.queue
            )
            if task_message.task not in self.app.tasks:
                unknown = InvalidMessage("unknown-task", f"no task named {task_message.task!r} in app {self.app.name}")
                self._reply(connection, publish_channel, task_message,
                            dead_letter_reply(task_message, f"unknown-task: {unknown.detail}").body())
                self._dead_letter(publish_channel, connection, delivery, unknown.reason, unknown.detail)
                return
        except InvalidMessage as exc:
            self._dead_letter(publish_channel, connection, delivery, exc.reason, exc.detail)
            return
        events.task_received(task_message, delivery.queue)
        if task_message.is_expired():
            self._reply(connection, publish_channel, task_message,
                        dead_letter_reply(task_message, "expired: arrived after its expiry time").body())
            self._dead_letter(publish_channel, connection, delivery, "expired", "arrived after its expiry time")
            return
        if (
            task_message.eta is not None
            and task_message.eta - time.time() > delay.EARLY_TOLERANCE
            and self.app.broker_delays
        ):
            # Longer than one trip through the cascade (or sent around it): another trip.
            self._resend(connection, publish_channel, delivery, task_message)
            delivery.message.ack()
            return
        self._run(connection, publish_channel, delivery, task_message)

    def _run(self, connection: Connection, publish_channel: Any, delivery: Delivery, task_message: TaskMessage) -> None:
        task = self.app.tasks[task_message.task]
        events.task_started(task_message, delivery.queue)
        context = {"task": task.name, "task_id": task_message.id, "queue": delivery.queue,
                   "attempt": task_message.attempts + 1}
        self._task_log.info("task started", **context)
        guard = limits.TaskThreadGuard()
        deadlines = limits.Deadlines.start(task.options.soft_time_limit, task.options.time_limit)
        if self._watchdog is not None:
            outcome = self._run_here(connection, publish_channel, delivery, task_message, guard, deadlines)
        else:
            future = self._executor.submit(run_task, task, task_message, delivery.queue, guard,
                                           self._reply_wanted(task, task_message))
            outcome = self._wait_for_outcome(connection, future, guard, deadlines)
        if outcome is None:
            self._hard_time_limit(connection, publish_channel, delivery, task_message)
            return
        reply = outcome.reply
        if reply.ok:
            # Ack first: the broker sends the next message while we record this one.
            self._settle(connection, publish_channel, delivery, task_message, outcome)
            events.task_finished(task_message, delivery.queue, True, outcome.runtime)
            self._task_log.info("task succeeded", runtime=round(outcome.runtime, 6), **context)
            return
        # A failure is recorded before it is settled, so task.failed comes before the
        # task.retried or task.dead_lettered that follows from it.
        events.task_finished(task_message, delivery.queue, False, outcome.runtime, reply.exc_type, reply.exc_message)
        # One ERROR record carrying the traceback: what an operator reading the log needs first.
        self._task_log.error("task failed", runtime=round(outcome.runtime, 6), exc_type=reply.exc_type,
                             exc_message=reply.exc_message, exception=reply.traceback, **context)
        self._settle(connection, publish_channel, delivery, task_message, outcome)

    def _run_here(self, connection: Connection, publish_channel: Any, delivery: Delivery, task_message: TaskMessage,
                  guard: limits.TaskThreadGuard, deadlines: limits.Deadlines) -> Outcome:
        """Forked child: run the task on this thread while the watchdog holds the connection."""
        assert self._watchdog is not None

        def hard_limit(lost: BaseException | None) -> None:  # on the watchdog thread; ends the process
            if lost is not None:  # nothing to settle: the broker requeued the message
                os._exit(limits.EXIT_TIME_LIMIT)
            self._hard_time_limit(connection, publish_channel, delivery, task_message)

        task = self.app.tasks[task_message.task]
        limits.arm_backstop(task.options.time_limit)
        self._watchdog.lend(Watch(connection, deadlines, guard, hard_limit))
        try:
            return run_task(task, task_message, delivery.queue, guard, self._reply_wanted(task, task_message))
        finally:
            self._watchdog.take_back()  # raises if the connection broke meanwhile
            if task.options.time_limit is not None:
                limits.disarm_backstop()

    def _wait_for_outcome(self, connection: Connection, future: Any, guard: limits.TaskThreadGuard,
                          deadlines: limits.Deadlines) -> Outcome | None:
        """In-process worker (no watchdog): serve the connection until the task, on the task
        thread, ends; None if it ran past its hard time limit.

        If the connection breaks meanwhile, the task is still waited for (never two at
        once in one child, and its limits still hold), then the error is raised: the
        broker has requeued the message, so its outcome can't be settled here.
        """
        lost: BaseException | None = None
        soft_sent = False
        while True:
            now = time.monotonic()
            if deadlines.soft is not None and now >= deadlines.soft and not soft_sent:
                soft_sent = True  # once: if the task just returned, there is nothing to interrupt
                guard.interrupt()
            if deadlines.hard is not None and now >= deadlines.hard:
                if lost is not None:  # nothing to settle: the broker requeued the message
                    raise lost
                return None
            try:
                outcome = future.result(timeout=deadlines.wait_time(TICK, soft_sent))
                break
            except FutureTimeout:
                if lost is None:
                    try:
                        keep_connection_alive(connection)
                    except self.app.broker.connection_errors as exc:
                        lost = exc
        if lost is not None:
            raise lost
        return outcome

    def _dead_letter(self, publish_channel: Any, connection: Connection, delivery: Delivery, reason: str, detail: str,
                     *, attempts: int | None = None, failure: Reply | None = None) -> None:
        """Park a message in ``<queue>.dead`` with the reason (and the failure, if it ran), then ack it.

        Publish-then-ack with confirms means the message is never in neither place; it
        may, after a crash in between, be in both, which an operator can see.
        """
        message = delivery.message
        headers = copies.dead_letter_headers(message.headers, reason=reason, detail=detail, queue=delivery.queue,
                                             attempts=attempts, failure=failure)
        properties = copies.carried_properties(message.properties)
        properties.pop("priority", None)
        publish_on(
            connection,
            delivery.body,
            routing_key=topology.dead_letter_queue_name(delivery.queue),
            headers=headers,
            channel=publish_channel,
            # Kept as it came, so a replay is the very message that failed.
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            check_frame_size=True,
            **properties,
        )
        message.ack()
        events.task_dead_lettered(delivery.queue, reason, detail, headers)
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


def child_main(app: App, queue_names: list[str], supervisor_pid: int) -> None:
    """Entry point of a forked child process."""
    die_with_parent(supervisor_pid)  # first: before it holds a message, not after
    app.forget_connections_after_fork()
    events.install(app, queue_names)
    worker = ChildWorker(app, queue_names, owns_process=True)
    worker.install_signal_handlers()
    # The supervisor forked us with stop signals blocked; any that arrived meanwhile are
    # delivered now, to our own handlers.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        exit_code = worker.run()
    except BrokerError as exc:  # e.g. the embedded broker's file was damaged under us
        log.error("the broker is unusable, stopping", error=str(exc))
        exit_code = EXIT_BROKER_UNUSABLE
    os._exit(exit_code)
