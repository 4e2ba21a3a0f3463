"""Prometheus metrics as middleware: what each worker child received, ran, retried and
dead-lettered, counted at the pipeline's hooks (needs the ``metrics`` extra).

``taskq worker --metrics-port N`` adds one to the app and serves every child's numbers
(taskq/worker/metrics_export.py); ``App(middleware=[..., PrometheusMetrics()])`` counts the
same way for a deployment that serves them itself. Names and labels: docs/middleware.md.

Labels are the task's name and the queue, both fixed by the app's code, and a dead
letter's reason folded into the closed set below: never free text a message brings
(an unknown task's name, an exception's message), which would grow a series per value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Retry
from taskq.middleware.pipeline import Middleware

if TYPE_CHECKING:
    from kombu.connection import Connection

#: Every ``reason`` taskq itself dead-letters with (docs/wire-format.md#dead-letter-reasons).
DEAD_LETTER_REASONS = frozenset({
    "wrong-content-type", "undecodable-body", "malformed-body", "missing-task-name", "missing-task-id",
    "invalid-header", "unknown-task", "expired", "revoked", "failed", "retries-exhausted", "worker-error",
    "state-store-unavailable",
})
OTHER_REASON = "other"  #: the label of a reason a middleware of the app's own made up
NO_TASK = "?"  #: the task label of a message that names no task of this app (or can't be read)
#: Prometheus' default buckets, then up to 10 minutes: background tasks run longer than web requests.
RUN_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                       30.0, 60.0, 120.0, 300.0, 600.0)
LABELS = ("task", "queue")


@dataclass(frozen=True)
class TaskSeries:
    """One (task, queue)'s series of each metric, looked up once (``labels()`` costs more than ``inc()``):
    all made at its first message, at 0, so a rate of failures is 0 rather than missing."""

    received: Counter
    succeeded: Counter
    failed: Counter
    retried: Counter
    run_seconds: Histogram
    in_flight: Gauge


class PrometheusMetrics(Middleware):
    """Counters, a run-time histogram and an in-flight gauge per task and queue.

    ``registry`` is where the metrics are registered (prometheus_client's default one unless
    given; a test passes a fresh ``CollectorRegistry``). In a worker whose children write to
    ``PROMETHEUS_MULTIPROC_DIR`` the values go to that directory instead, and the in-flight
    gauge adds up the live children ("livesum").
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY,
                 buckets: Sequence[float] = RUN_SECONDS_BUCKETS) -> None:
        def counter(name: str, documentation: str, labels: Sequence[str] = LABELS) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        self.received = counter("taskq_tasks_received_total", "Messages decoded that name a task of the app.")
        self.succeeded = counter("taskq_tasks_succeeded_total", "Runs that returned.")
        self.failed = counter("taskq_tasks_failed_total", "Runs that raised or hit their hard time limit.")
        self.retried = counter("taskq_tasks_retried_total", "Failed runs sent again as the next attempt.")
        self.dead_lettered = counter("taskq_tasks_dead_lettered_total", "Messages parked in <queue>.dead.",
                                     (*LABELS, "reason"))
        self.run_seconds = Histogram("taskq_task_run_seconds", "How long a run took, from its start to its "
                                     "outcome (not the wait in the queue).", LABELS, registry=registry,
                                     buckets=buckets)
        self.in_flight = Gauge("taskq_tasks_in_flight", "Tasks running now.", LABELS, registry=registry,
                               multiprocess_mode="livesum")
        self._series: dict[tuple[str, str], TaskSeries] = {}
        # The runs started and not yet ended: a run can end without an outcome (its connection
        # lost, an error of the worker's), and must not stay in flight then.
        self._running: list[tuple[Delivery, TaskSeries]] = []

    def on_connect(self, connection: Connection) -> None:
        """A new connection: whatever ran on the old one was requeued by the broker, so it is over here."""
        while self._running:
            self._ended(self._running[0][0])

    def on_received(self, delivery: Delivery) -> None:
        self.series(delivery).received.inc()

    def on_task_start(self, delivery: Delivery) -> None:
        series = self.series(delivery)
        series.in_flight.inc()
        self._running.append((delivery, series))

    def on_task_succeeded(self, delivery: Delivery) -> None:
        series = self.series(delivery)
        series.succeeded.inc()
        self._finished(delivery, series)

    def on_task_failed(self, delivery: Delivery) -> None:
        series = self.series(delivery)
        series.failed.inc()
        self._finished(delivery, series)

    def on_settled(self, delivery: Delivery, decision: Decision) -> None:
        self._ended(delivery)  # a run dead-lettered as a worker error ends here, without an outcome
        if isinstance(decision, Retry):
            self.series(delivery).retried.inc()
        elif isinstance(decision, DeadLetter):
            reason = decision.reason if decision.reason in DEAD_LETTER_REASONS else OTHER_REASON
            self.dead_lettered.labels(*labels(delivery), reason).inc()

    def series(self, delivery: Delivery) -> TaskSeries:
        key = labels(delivery)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = TaskSeries(
                self.received.labels(*key), self.succeeded.labels(*key), self.failed.labels(*key),
                self.retried.labels(*key), self.run_seconds.labels(*key), self.in_flight.labels(*key),
            )
        return series

    def _finished(self, delivery: Delivery, series: TaskSeries) -> None:
        if delivery.outcome is not None:
            series.run_seconds.observe(delivery.outcome.runtime)
        self._ended(delivery)

    def _ended(self, delivery: Delivery) -> None:
        for index, (running, series) in enumerate(self._running):
            if running is delivery:
                del self._running[index]
                series.in_flight.dec()
                return


def labels(delivery: Delivery) -> tuple[str, str]:
    """(task, queue): the task's name only once it is one of the app's, never a name a message made up."""
    return (delivery.task.name if delivery.task is not None else NO_TASK), delivery.queue
