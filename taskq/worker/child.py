"""One worker child: a connection with prefetch=1, one message at a time through the pipeline.

Per message: decode it and look up its task, ask the middleware whether to run it, run
it, ask them what a failure comes to, and hand the decision to the one settler
(settle.py), which publishes with a confirm and then acks. Features (expiry, eta,
retries, time limits, events) are middleware (taskq/middleware/), not code in this loop.

One rule: only the thread holding the connection reads, publishes or acks (AMQP channels
are not thread-safe); running.py keeps the connection served while a task runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import structlog
from kombu import Connection, Consumer

from taskq import consumer_loop, routing, settings
from taskq.broker import REFUSALS, Broker, connection_problem
from taskq.errors import BrokerError, InvalidMessage
from taskq.message import decode_task
from taskq.middleware.delivery import (
    DeadLetter, Decision, Delivery, Succeeded, dead_letter_failure, dead_letter_reply,
)
from taskq.middleware.lifecycle_events import LifecycleEvents
from taskq.middleware.pipeline import Middleware, Pipeline, WorkerInfo
from taskq.middleware.revocation import abandoned_outcome
from taskq.middleware.time_limits import hard_limit_outcome
from taskq.worker import limits
from taskq.worker.parent_death import die_with_parent
from taskq.worker.running import TaskRunner, Watchdog
from taskq.worker.settle import Settler, close_within

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.task import Task

log = structlog.get_logger("taskq.worker")

#: The child's exit status when the broker itself is unusable: it refused our login or vhost
#: (broker.REFUSALS) settings.WORKER_REFUSED_ATTEMPTS times in a row (riding out a user or
#: vhost being created just now), or raised BrokerError (say, a damaged embedded broker
#: file). Every child forked would die the same way, so the supervisor stops the worker
#: instead of starting another.
EXIT_BROKER_UNUSABLE = os.EX_CONFIG
SUCCEEDED = Succeeded()


# What a worker child needs from the App is taken once, before it starts: the worker never
# calls up into the App (for topology, tasks or middleware) while it runs.
@dataclass(frozen=True)
class WorkerSetup:
    """The broker, the queues to consume (each with its dead-letter queue), the tasks and the middleware."""

    app_name: str
    broker: Broker
    heartbeat: float
    queue_type: str
    broker_delays: bool
    tasks: Mapping[str, Task[..., Any]]
    queues: tuple[tuple[str, Any, Any], ...]  #: (name, kombu Queue, its ``<name>.dead`` Queue)
    middleware: tuple[Middleware, ...]

    @classmethod
    def from_app(cls, app: App, queue_names: Iterable[str], extra_middleware: Iterable[Middleware] = ()) -> WorkerSetup:
        """``extra_middleware`` go first: the worker child's own (lifecycle events) see every message."""
        return cls(
            app_name=app.name,
            broker=app.broker,
            heartbeat=app.heartbeat,
            queue_type=app.queue_type,
            broker_delays=app.broker_delays,
            tasks=app.tasks,
            queues=tuple((name, app.queue(name), app.dead_letter_queue(name)) for name in queue_names),
            middleware=(*extra_middleware, *app.middleware),
        )

    @property
    def queue_names(self) -> list[str]:
        return [name for name, _, _ in self.queues]


class ChildWorker:
    """Consumes from the setup's queues until told to stop; survives broker restarts."""

    def __init__(self, setup: WorkerSetup, tick: float = settings.WORKER_TICK, owns_process: bool = False) -> None:
        self.setup = setup
        self.broker = setup.broker
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
        self.pipeline = Pipeline(setup.middleware)
        self._inbox: list[Delivery] = []
        watchdog = Watchdog(self.keep_alive, period=tick / 2) if owns_process else None
        self._runner = TaskRunner(self.keep_alive, self.broker.connection_errors, watchdog)
        self._task_log = log
        self._task_lines = True  # whether _task_log keeps INFO lines (see _bind_task_log)
        self._refusals = 0  # refused logins or vhosts in a row, up to settings.WORKER_REFUSED_ATTEMPTS
        self._broker_unusable = False  # refused that often: stop, and exit EXIT_BROKER_UNUSABLE

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
        setup = self.setup
        self.pipeline.notify("on_worker_start", WorkerInfo(setup.app_name, tuple(setup.queue_names),
                                                           setup.broker_delays, os.getpid()))
        self._bind_task_log()
        try:
            return self._reconnecting()
        finally:
            self._runner.executor.shutdown(wait=True)
            self.pipeline.notify("on_worker_stop")

    def _bind_task_log(self) -> None:
        """A concrete logger for the per-task lines, made once the middleware configured logging
        (the broadcast processor): the module's lazy proxy builds a new logger on every call, 6%
        of a no-op task's time. Whether it keeps INFO is asked once too: at the worker's usual
        WARNING level the two INFO lines per task are dropped, and building their fields anyway
        cost a no-op task ~1.5 µs (docs/benchmarks.md)."""
        self._task_log = log.bind()
        is_enabled_for = getattr(self._task_log, "is_enabled_for", None)  # structlog's filtering loggers
        self._task_lines = bool(is_enabled_for(logging.INFO)) if is_enabled_for is not None else True

    def _reconnecting(self) -> int:
        consumer_loop.run(
            lambda: self.broker.connect(heartbeat=self.setup.heartbeat),
            self._serve,
            errors=self.broker.connection_errors,
            should_stop=lambda: self.stopping or self._broker_unusable,
            on_connected=self._on_connected,
            on_lost=self._on_lost,
        )
        return EXIT_BROKER_UNUSABLE if self._broker_unusable else 0

    def _on_connected(self, reconnected: bool) -> None:
        self._refusals = 0

    def _on_lost(self, lost: consumer_loop.Lost) -> None:
        # Deliveries of the dead channel can't be acked: the broker requeued them.
        self._inbox.clear()
        if not lost.was_connected and isinstance(lost.error, REFUSALS):
            self._refusals += 1
            if self._refusals >= settings.WORKER_REFUSED_ATTEMPTS:
                log.error("broker refused the connection: giving up", attempts=self._refusals,
                          error=connection_problem(self.broker.masked_url, lost.error))
                self._broker_unusable = True
                return
        log.warning(
            "broker refused the connection, retrying" if self._refusals else "broker connection lost, reconnecting",
            broker=self.broker.masked_url,
            error=f"{type(lost.error).__name__}: {lost.error}",
            retry_in=round(lost.pause, 1),  # jittered: spreads a fleet's reconnects
        )

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
        if self.setup.queue_type == "classic":
            consume_channel.basic_qos(0, 1, True)
        settler = Settler(connection, self.pipeline, queue_type=self.setup.queue_type,
                          broker_delays=self.setup.broker_delays)
        # Before consuming starts: what a middleware reads on a channel of its own (the
        # revocations) is in place before this child can be handed its first task.
        self.pipeline.notify("on_connect", connection)
        consumers = []
        for name, queue, dead_letter_queue in self.setup.queues:
            bound = queue(consume_channel)
            bound.declare()
            dead_letter_queue(consume_channel).declare()
            consumer = Consumer(consume_channel, queues=[bound], on_message=self._receiver(name), no_ack=False,
                                auto_declare=False)
            consumer.consume()
            consumers.append(consumer)
        log.info("consuming", queues=self.setup.queue_names, pid=os.getpid())
        while not self.stopping:
            self.pipeline.notify("on_tick")
            if self._inbox:
                self._handle(settler, self._inbox.pop(0))
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
        self.pipeline.notify("on_disconnect")

    def _receiver(self, queue_name: str) -> Callable[[Any], None]:
        def receive(message: Any) -> None:
            self._inbox.append(Delivery(queue_name, message))

        return receive

    def keep_alive(self, connection: Connection) -> None:
        """Read whatever the broker sent (its heartbeats among it) and send ours if due; let the
        middleware publish what they hold (the running task's log lines, our status heartbeat)."""
        try:
            while True:
                connection.drain_events(timeout=0.01)
        except socket.timeout:
            pass
        connection.heartbeat_check()
        self.pipeline.notify("on_tick")

    # -- one message ---------------------------------------------------------------------

    def _handle(self, settler: Settler, delivery: Delivery) -> None:
        """Decide, run and settle one message; whatever goes wrong with it stays with it.

        A lost connection is the reconnect loop's business (the broker requeued the
        message). Any other error is this message's fault or ours, and raising it would
        end the child, whose replacement gets the same message: a crash loop. So the
        message is dead-lettered with the error, or, if even that fails, rejected into
        ``<queue>.dead`` by the broker's own dead-lettering.
        """
        try:
            decision: Decision | None = self._admit(delivery)
            if decision is None:
                self.pipeline.on_received(delivery)
                decision = self.pipeline.before_run(delivery)
            if decision is None:
                self._run(settler, delivery)
            else:
                settler.settle(delivery, decision)
        except self.broker.connection_errors:
            raise
        except Exception as exc:
            self._contain(settler, delivery, exc)

    def _contain(self, settler: Settler, delivery: Delivery, error: Exception) -> None:
        message = delivery.message
        detail = f"{type(error).__name__}: {error}"
        log.error("handling a message failed", queue=delivery.queue, error=detail, exc_info=error)
        if message.acknowledged:  # settled already: what failed came after the ack
            return
        try:
            settler.settle(delivery, DeadLetter("worker-error", detail))
        except self.broker.connection_errors:
            raise
        except Exception as dead_letter_error:
            log.error("dead-lettering failed: rejecting the message into the dead-letter queue",
                      queue=delivery.queue, error=f"{type(dead_letter_error).__name__}: {dead_letter_error}")
            if not message.acknowledged:
                message.reject(requeue=False)

    def _admit(self, delivery: Delivery) -> DeadLetter | None:
        """Decode the message and look up its task (once); a dead letter if either fails."""
        message = delivery.message
        try:
            envelope = decode_task(delivery.body, message.content_type, message.headers, message.properties)
        except InvalidMessage as exc:
            return DeadLetter(exc.reason, exc.detail)
        delivery.envelope = envelope = routing.address(envelope, delivery.queue)
        delivery.task = self.setup.tasks.get(envelope.task)
        if delivery.task is None:
            detail = f"no task named {envelope.task!r} in app {self.setup.app_name}"
            return DeadLetter("unknown-task", detail, reply=dead_letter_reply(envelope, f"unknown-task: {detail}"))
        return None

    def _run(self, settler: Settler, delivery: Delivery) -> None:
        assert delivery.task is not None and delivery.envelope is not None
        self.pipeline.on_task_start(delivery)
        if self._task_lines:
            self._task_log.info("task started", **task_context(delivery))
        delivery.started_at = time.monotonic()
        outcome = self._runner.run(settler.connection, delivery, lambda: self._hard_time_limit(settler, delivery))
        if outcome is None:
            self._hard_time_limit(settler, delivery)
            return
        delivery.outcome = outcome
        reply = outcome.reply
        if reply.ok:
            # Ack first: the broker sends the next message while we record this one.
            settler.settle(delivery, SUCCEEDED)
            self.pipeline.on_task_succeeded(delivery)
            if self._task_lines:
                self._task_log.info("task succeeded", runtime=round(outcome.runtime, 6), **task_context(delivery))
            return
        # A failure is reported before it is settled, so task.failed comes before the
        # task.retried or task.dead_lettered that follows from it.
        self.pipeline.on_task_failed(delivery)
        # One ERROR record carrying the traceback: what an operator reading the log needs first.
        self._task_log.error("task failed", runtime=round(outcome.runtime, 6), exc_type=reply.exc_type,
                             exc_message=reply.exc_message, exception=reply.traceback, **task_context(delivery))
        settler.settle(delivery, self._after_failure(delivery))

    def _after_failure(self, delivery: Delivery) -> Decision:
        """What the middleware decide (retries), or a dead letter when none has an opinion."""
        assert delivery.outcome is not None
        decided = self.pipeline.decide_failure(delivery)
        return decided if decided is not None else dead_letter_failure(delivery.attempt, "failed", delivery.outcome.reply)

    def _hard_time_limit(self, settler: Settler, delivery: Delivery) -> None:
        """The task thread is stuck past its time limit, or a middleware said to abandon it
        (revoked with terminate): settle its message as a failure, then die."""
        assert delivery.task is not None and delivery.envelope is not None
        if delivery.abandon is not None:
            log.error("task abandoned: settling the message and replacing this child",
                      task=delivery.task.name, task_id=delivery.envelope.id, reason=delivery.abandon)
            delivery.outcome = abandoned_outcome(delivery)
        else:
            log.error("hard time limit: settling the message and replacing this child",
                      task=delivery.task.name, task_id=delivery.envelope.id, time_limit=delivery.time_limit)
            delivery.outcome = hard_limit_outcome(delivery)
        self.pipeline.on_task_failed(delivery)
        if not self.owns_process:
            # In-process worker: settle, and leave the stuck (daemon) thread behind.
            settler.settle(delivery, self._after_failure(delivery))
            self._runner.executor.abandon()
            return
        try:
            settler.settle(delivery, self._after_failure(delivery))
            self.pipeline.notify("on_disconnect")  # publish what this child still holds, and say it is going
            close_within(settler.connection, seconds=5.0)  # the close handshake proves the ack arrived
        finally:
            os._exit(limits.EXIT_TIME_LIMIT)


def task_context(delivery: Delivery) -> dict[str, Any]:
    """The fields of the worker's own lines about a task."""
    assert delivery.task is not None and delivery.envelope is not None
    return {"task": delivery.task.name, "task_id": delivery.envelope.id, "queue": delivery.queue,
            "attempt": delivery.attempt}


def child_main(app: App, queue_names: list[str], supervisor_pid: int) -> None:
    """Entry point of a forked child process."""
    die_with_parent(supervisor_pid)  # first: before it holds a message, not after
    app.forget_connections_after_fork()
    events = LifecycleEvents.from_env(app.name, queue_names)
    worker = ChildWorker(WorkerSetup.from_app(app, queue_names, [events]), owns_process=True)
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
