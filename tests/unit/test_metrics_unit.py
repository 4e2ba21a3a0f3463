"""PrometheusMetrics without a broker: real Delivery objects through its hooks, the numbers read
back from a registry of the test's own."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from taskq import App
from taskq.message import Reply, TaskMessage
from taskq.middleware import DeadLetter, Delivery, Outcome, Redelay, Retry, Skip, Succeeded
from taskq.middleware.delivery import failure
from taskq.middleware.metrics import DEAD_LETTER_REASONS, NO_TASK, OTHER_REASON, PrometheusMetrics
from taskq.middleware.pipeline import Pipeline
from tests.support import ROOT

app = App("metrics-unit")


@app.task
def resize() -> None: ...


QUEUE = "images"
RESIZE = {"task": resize.name, "queue": QUEUE}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> PrometheusMetrics:
    return PrometheusMetrics(registry)


def delivery(task=resize) -> Delivery:
    envelope = TaskMessage(id="id-1", task=task.name if task else "no.such.task")
    return Delivery(QUEUE, SimpleNamespace(headers={}, properties={}, body=b""), envelope=envelope, task=task)


def succeeded(runtime: float) -> Outcome:
    return Outcome(reply=Reply(task_id="id-1", ok=True, result=None), body=b"", runtime=runtime)


def failed(runtime: float) -> Outcome:
    exc = ValueError("broken")
    return Outcome(reply=failure("id-1", exc), body=b"", runtime=runtime, exception=exc)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_run_that_returned_is_received_succeeded_timed_and_no_longer_in_flight(metrics, registry):
    message = delivery()
    metrics.on_received(message)
    metrics.on_task_start(message)
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 1
    message.outcome = succeeded(runtime=0.3)
    metrics.on_settled(message, Succeeded())  # acked before on_task_succeeded, as the worker does
    metrics.on_task_succeeded(message)

    assert value(registry, "taskq_tasks_received_total", **RESIZE) == 1
    assert value(registry, "taskq_tasks_succeeded_total", **RESIZE) == 1
    assert value(registry, "taskq_tasks_failed_total", **RESIZE) == 0  # there, at 0: rate() works from the start
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 0
    assert value(registry, "taskq_task_run_seconds_count", **RESIZE) == 1
    assert value(registry, "taskq_task_run_seconds_sum", **RESIZE) == pytest.approx(0.3)
    assert value(registry, "taskq_task_run_seconds_bucket", le="0.25", **RESIZE) == 0
    assert value(registry, "taskq_task_run_seconds_bucket", le="0.5", **RESIZE) == 1


def test_failed_runs_retried_then_dead_lettered_are_counted_per_run(metrics, registry):
    for attempt, decision in enumerate([Retry(countdown=1.0), Retry(countdown=2.0),
                                        DeadLetter("retries-exhausted", "ValueError: broken")]):
        message = delivery()
        metrics.on_received(message)
        metrics.on_task_start(message)
        message.outcome = failed(runtime=0.01 * (attempt + 1))
        metrics.on_task_failed(message)  # reported before it is settled, as the worker does
        metrics.on_settled(message, decision)

    assert value(registry, "taskq_tasks_received_total", **RESIZE) == 3
    assert value(registry, "taskq_tasks_failed_total", **RESIZE) == 3
    assert value(registry, "taskq_tasks_retried_total", **RESIZE) == 2
    assert value(registry, "taskq_tasks_dead_lettered_total", reason="retries-exhausted", **RESIZE) == 1
    assert value(registry, "taskq_tasks_succeeded_total", **RESIZE) == 0
    assert value(registry, "taskq_task_run_seconds_count", **RESIZE) == 3
    assert value(registry, "taskq_task_run_seconds_sum", **RESIZE) == pytest.approx(0.06)
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 0


def test_a_message_settled_without_running_is_neither_run_nor_in_flight(metrics, registry):
    for decision in (Skip("revoked"), Redelay(), DeadLetter("expired", "too late")):
        message = delivery()
        metrics.on_received(message)
        metrics.on_settled(message, decision)
    assert value(registry, "taskq_tasks_received_total", **RESIZE) == 3
    assert value(registry, "taskq_tasks_dead_lettered_total", reason="expired", **RESIZE) == 1
    assert value(registry, "taskq_task_run_seconds_count", **RESIZE) == 0
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 0


def test_a_message_naming_no_task_of_the_app_is_labelled_with_no_task_name(metrics, registry):
    # The worker dead-letters it at once (no on_received): the name it carries is the
    # sender's free text, and must not become a label value.
    metrics.on_settled(delivery(task=None), DeadLetter("unknown-task", "no task named 'no.such.task'"))
    assert value(registry, "taskq_tasks_dead_lettered_total", task=NO_TASK, queue=QUEUE, reason="unknown-task") == 1
    assert value(registry, "taskq_tasks_dead_lettered_total", task="no.such.task", queue=QUEUE,
                 reason="unknown-task") is None


def test_a_reason_of_the_apps_own_middleware_is_counted_as_other(metrics, registry):
    metrics.on_settled(delivery(), DeadLetter("customer 4711 is blocked", "free text"))
    assert value(registry, "taskq_tasks_dead_lettered_total", reason=OTHER_REASON, **RESIZE) == 1
    assert value(registry, "taskq_tasks_dead_lettered_total", reason="customer 4711 is blocked", **RESIZE) is None


def test_a_run_dead_lettered_as_a_worker_error_leaves_in_flight(metrics, registry):
    message = delivery()
    metrics.on_task_start(message)  # then the worker failed around the run: no outcome, no on_task_failed
    metrics.on_settled(message, DeadLetter("worker-error", "RuntimeError: bug"))
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 0
    assert value(registry, "taskq_tasks_dead_lettered_total", reason="worker-error", **RESIZE) == 1


def test_a_run_whose_connection_was_lost_leaves_in_flight_at_the_next_connection(metrics, registry):
    message = delivery()
    metrics.on_task_start(message)  # the broker requeued it when the connection went
    metrics.on_connect(SimpleNamespace())
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 0
    metrics.on_task_start(delivery())  # the same message again, on the new connection
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 1


def test_the_in_flight_gauge_goes_down_once_per_run_however_many_hooks_end_it(metrics, registry):
    first, second = delivery(), delivery()
    metrics.on_task_start(first)
    metrics.on_task_start(second)
    first.outcome = failed(runtime=0.1)
    metrics.on_task_failed(first)
    metrics.on_settled(first, Retry(countdown=0.0))
    assert value(registry, "taskq_tasks_in_flight", **RESIZE) == 1  # the second still runs


def test_the_worker_calls_the_hooks_it_counts_in_and_no_others(metrics):
    assert metrics.used_hooks() == {"on_connect", "on_received", "on_task_start", "on_task_succeeded",
                                    "on_task_failed", "on_settled"}
    pipeline = Pipeline([metrics])
    assert not pipeline.wants("before_run") and not pipeline.wants("on_tick") and not pipeline.wants("before_publish")


def test_the_histogram_buckets_can_be_chosen(registry):
    PrometheusMetrics(registry, buckets=(1.0, 10.0))
    metrics_names = {sample.labels.get("le") for metric in registry.collect() for sample in metric.samples
                     if sample.name == "taskq_task_run_seconds_bucket"}
    assert metrics_names <= {"1.0", "10.0", "+Inf"}


def test_every_documented_dead_letter_reason_is_a_label_value_and_no_other():
    # The closed set of label values is the table of reasons in docs/wire-format.md: a reason
    # added there (and in the code) without adding it here would be counted as "other".
    text = (ROOT / "docs" / "wire-format.md").read_text()
    table = text.split("## Dead-letter reasons", 1)[1].split("\n\n", 2)[1]
    rows = table.splitlines()[2:]  # under the header and its |---| line
    documented = {code for row in rows for code in re.findall(r"`([a-z-]+)`", row.split(" | ")[0])}
    assert "worker-error" in documented  # the parse found the table
    assert documented == DEAD_LETTER_REASONS


def test_every_reason_the_code_dead_letters_with_is_in_the_closed_set():
    used = set()
    for path in (ROOT / "taskq").rglob("*.py"):
        source = path.read_text()
        used.update(re.findall(r"(?:InvalidMessage|DeadLetter)\(\"([a-z-]+)\"", source))
        used.update(re.findall(r"reason=\"([a-z-]+)\"", source))
    assert {"undecodable-body", "unknown-task", "expired", "worker-error", "retries-exhausted"} <= used  # the scan works
    assert used <= DEAD_LETTER_REASONS, sorted(used - DEAD_LETTER_REASONS)
