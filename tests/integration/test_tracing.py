"""Tracing across a real worker process: the producer's span in this process, the worker's
in the child, joined by the trace context the message carried through the broker.

The worker writes its finished spans as JSON lines (tests/support/tracing_apps.py); the tests wait
for the lines they expect, with a deadline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind

from taskq import TaskError
from tests.support.cli_helpers import complete_lines
from tests.support.waiting import wait_until
from tests.support.tracing_apps import BATCH_ENV, SPANS_FILE_ENV, spans_in_memory

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]

APP = "tests.support.tracing_apps:app"


@pytest.fixture
def tapp(broker_url: str):
    """tests.support.tracing_apps.app on the test broker; its in-memory producer spans cleared."""
    from tests.support.tracing_apps import app

    app.use_broker(broker_url)
    spans_in_memory.clear()
    yield app
    app.close()


def worker_spans(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in complete_lines(path.read_text())]


def consumer_spans(path: Path, count: int) -> list[dict]:
    """Wait until the worker wrote ``count`` CONSUMER spans; return them in the order they ended."""
    return wait_until(
        lambda: (found := [s for s in worker_spans(path) if s["kind"] == "CONSUMER"]) and len(found) >= count and found,
        timeout=30, what=f"{count} consumer span(s) in {path.name}",
    )


def producer_span():
    [span] = [s for s in spans_in_memory.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def test_the_workers_span_is_the_child_of_the_producers_across_processes(tapp, queue_name, start_worker, tmp_path):
    from tests.support.tracing_apps import work

    spans_file = tmp_path / "spans.jsonl"
    worker = start_worker([queue_name], app=APP, extra_env={SPANS_FILE_ENV: str(spans_file)})
    result = work.apply_async((7,), queue=queue_name)
    assert result.get(timeout=30) == 7
    [consumer] = consumer_spans(spans_file, 1)

    trace_id, producer_span_id = producer_span()
    assert consumer["pid"] in worker.child_pids()
    assert consumer["trace_id"] == trace_id
    assert consumer["parent_span_id"] == producer_span_id
    assert consumer["name"] == f"process {work.name}"
    attributes = consumer["attributes"]
    assert attributes["messaging.destination.name"] == queue_name
    assert attributes["messaging.message.id"] == result.id
    assert attributes["taskq.task.attempt"] == 1 and attributes["taskq.decision"] == "succeeded"
    # The task's own span is a child of the worker's: the span was current while it ran.
    [inside] = [s for s in worker_spans(spans_file) if s["name"] == "inside the task"]
    assert inside["trace_id"] == trace_id and inside["parent_span_id"] == consumer["span_id"]


def test_a_failing_then_retried_task_has_a_span_per_attempt_in_one_trace(tapp, queue_name, start_worker, tmp_path):
    from tests.support.tracing_apps import fails_once

    spans_file = tmp_path / "spans.jsonl"
    start_worker([queue_name], app=APP, extra_env={SPANS_FILE_ENV: str(spans_file)})
    result = fails_once.apply_async((str(tmp_path / "marker"),), queue=queue_name)
    assert result.get(timeout=30) == "second attempt"
    attempts = consumer_spans(spans_file, 2)

    trace_id, producer_span_id = producer_span()
    assert [s["attributes"]["taskq.task.attempt"] for s in attempts] == [1, 2]
    assert [s["attributes"]["taskq.decision"] for s in attempts] == ["retry", "succeeded"]
    assert {s["trace_id"] for s in attempts} == {trace_id}
    # The retry kept the original's traceparent: both attempts hang off the producer's span.
    assert {s["parent_span_id"] for s in attempts} == {producer_span_id}
    assert [s["status"] for s in attempts] == ["ERROR", "UNSET"]
    assert attempts[0]["events"] == ["exception"] and attempts[0]["attributes"]["error.type"] == "ValueError"


def test_past_the_hard_time_limit_the_span_is_flushed_before_the_child_dies(tapp, queue_name, start_worker, tmp_path):
    from tests.support.tracing_apps import stuck

    spans_file = tmp_path / "spans.jsonl"
    # Batched, and flushed only when the child disconnects: what arrives came from that flush.
    worker = start_worker([queue_name], app=APP, extra_env={SPANS_FILE_ENV: str(spans_file), BATCH_ENV: "1"})
    victim = worker.child_pids()
    result = stuck.apply_async((60.0,), queue=queue_name)
    with pytest.raises(TaskError, match="TimeLimitExceeded"):
        result.get(timeout=30)
    [span] = consumer_spans(spans_file, 1)

    assert span["pid"] in victim  # written by the child that then died
    assert (span["trace_id"], span["parent_span_id"]) == producer_span()
    assert span["status"] == "ERROR" and span["events"] == ["exception"]
    assert span["attributes"]["error.type"] == "taskq.errors.TimeLimitExceeded"
    assert span["attributes"]["taskq.decision"] == "dead_letter"
    wait_until(lambda: worker.child_pids() and worker.child_pids() != victim, what="a replacement child")


def test_a_graceful_stop_flushes_the_spans_the_child_holds(tapp, queue_name, start_worker, tmp_path):
    from tests.support.tracing_apps import work

    spans_file = tmp_path / "spans.jsonl"
    worker = start_worker([queue_name], app=APP, extra_env={SPANS_FILE_ENV: str(spans_file), BATCH_ENV: "1"})
    assert work.apply_async((1,), queue=queue_name).get(timeout=30) == 1
    assert worker_spans(spans_file) == []  # held by the batch processor: nothing exports them but a flush
    assert worker.stop() == 0
    [consumer] = [s for s in worker_spans(spans_file) if s["kind"] == "CONSUMER"]
    assert (consumer["trace_id"], consumer["parent_span_id"]) == producer_span()
