"""The Tracing middleware without a broker: its hooks called as the worker calls them, spans
caught by an in-memory exporter on a private TracerProvider (the global one is never set)."""

from __future__ import annotations

import contextvars
import logging
import importlib
import re
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import DefaultGetter, DefaultSetter, TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskq import App, TaskError
from taskq.message import Reply, TaskMessage
from taskq.middleware import DeadLetter, Delivery, Expiry, Outcome, Retry, Succeeded, default_middleware
from taskq.middleware.delivery import dead_letter_failure, failure
from taskq.middleware.time_limits import hard_limit_outcome
from taskq.middleware.tracing import MAX_PROPAGATION_HEADER, OWN_HEADERS, Tracing


def in_memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


# The app of the through-the-worker tests at the end: spans to a provider of its own.
provider, exporter = in_memory_provider()
app = App("tracing-unit", middleware=[*default_middleware(), Tracing(tracer_provider=provider)])


@app.task
def plain(value: int = 0) -> int:
    return value


@app.task(max_retries=1, retry_backoff=0)
def always_fails() -> None:
    raise KeyError("always")


@app.task(time_limit=5)
def limited() -> None: ...


@pytest.fixture(autouse=True)
def no_span_ends_twice(caplog):
    """The SDK logs (and ignores) a second end() of a span: no test may cause one."""
    exporter.clear()
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        yield
    assert not [r for r in caplog.records if "ended span" in r.getMessage()], "a span was ended twice"


@pytest.fixture
def traced() -> tuple[Tracing, InMemorySpanExporter]:
    private_provider, private_exporter = in_memory_provider()
    return Tracing(tracer_provider=private_provider), private_exporter


def published(tracing: Tracing, task: Any = plain, message_id: str = "id-1") -> tuple[TaskMessage, dict[str, Any]]:
    """A message as .delay() sends it, through the producer hook."""
    message = TaskMessage(id=message_id, task=task.name)
    headers = message.headers()
    tracing.before_publish(message, headers)
    return message, headers


def delivery(message: TaskMessage, headers: dict[str, Any], task: Any = plain, queue: str = "orders",
             attempts: int = 0, expires: float | None = None) -> Delivery:
    """The worker's view of it, built as tests/unit/test_middleware_unit.py does."""
    envelope = TaskMessage(id=message.id, task=message.task, attempts=attempts, expires_at=expires)
    received = SimpleNamespace(headers=headers, properties={}, body=b"", delivery_tag=7,
                               delivery_info={"routing_key": queue, "exchange": ""})
    return Delivery(queue, received, envelope=envelope, task=task)


def succeeded(item: Delivery, result: Any = None) -> None:
    assert item.envelope is not None
    item.outcome = Outcome(reply=Reply(task_id=item.envelope.id, ok=True, result=result), body=b"", runtime=0.01)


def failed(item: Delivery, exc: BaseException) -> None:
    assert item.envelope is not None
    item.outcome = Outcome(reply=failure(item.envelope.id, exc), body=b"", runtime=0.01, exception=exc)


def run_to_success(tracing: Tracing, item: Delivery) -> None:
    """The hooks of a successful run, in the worker's order (a success is settled before it is reported)."""
    tracing.on_task_start(item)
    succeeded(item)
    tracing.on_settled(item, Succeeded())
    tracing.on_task_succeeded(item)


def run_to_failure(tracing: Tracing, item: Delivery, exc: BaseException, decision: Any) -> None:
    tracing.on_task_start(item)
    failed(item, exc)
    tracing.on_task_failed(item)
    tracing.on_settled(item, decision)


def spans(exporter_: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in exporter_.get_finished_spans() if span.kind == kind]


# -- producer ---------------------------------------------------------------------------------


def test_the_producer_span_is_made_and_its_context_injected_as_w3c_headers(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    [span] = spans(finished, SpanKind.PRODUCER)
    assert span.name == f"create {plain.name}"
    assert dict(span.attributes or {}) == {
        "messaging.system": "rabbitmq", "messaging.operation.type": "create", "messaging.operation.name": "create",
        "messaging.message.id": "id-1", "taskq.task.name": plain.name,
    }
    assert isinstance(headers["traceparent"], str)
    # The header says this span, as the propagator reads it back.
    carried = trace.get_current_span(propagate.extract({"traceparent": headers["traceparent"]})).get_span_context()
    assert (carried.trace_id, carried.span_id) == (span.context.trace_id, span.context.span_id)
    assert carried.is_remote
    assert {key: headers[key] for key in message.headers()} == message.headers()  # taskq's own untouched


def test_the_producer_span_is_a_child_of_the_callers_current_span(traced):
    tracing, finished = traced
    with tracing.tracer.start_as_current_span("web request") as request:
        published(tracing)
    [span] = spans(finished, SpanKind.PRODUCER)
    assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id


def test_a_trace_context_the_caller_set_is_kept_and_no_span_is_made(traced):
    tracing, finished = traced
    mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = TaskMessage(id="id-1", task=plain.name)
    headers = {**message.headers(), "traceparent": mine}
    tracing.before_publish(message, headers)
    assert headers["traceparent"] == mine and "tracestate" not in headers
    assert finished.get_finished_spans() == ()


class Clobbering(TextMapPropagator):
    """A propagator configured to write taskq's own headers, as no sane one would."""

    def inject(self, carrier, context=None, setter=DefaultSetter()):
        for key in ("task", "id", "attempts", "eta", "reason", "x-death", "custom-trace"):
            setter.set(carrier, key, "clobbered")

    def extract(self, carrier, context=None, getter=DefaultGetter()):
        return context or Context()

    @property
    def fields(self):
        return {"custom-trace"}


@pytest.fixture
def clobbering_propagator():
    """Swap the global propagator for one test, then put the original back."""
    original = propagate.get_global_textmap()
    propagate.set_global_textmap(Clobbering())
    try:
        yield
    finally:
        propagate.set_global_textmap(original)


def test_a_propagator_can_not_overwrite_taskq_headers(traced, clobbering_propagator):
    tracing, _ = traced
    message, headers = published(tracing)
    assert {key: headers[key] for key in message.headers()} == message.headers()
    assert "reason" not in headers and "x-death" not in headers
    assert headers["custom-trace"] == "clobbered"


def test_taskq_headers_are_listed_and_w3c_fields_are_not_among_them():
    every_field = TaskMessage(id="i", task="t", expires_at=1.0, eta=2.0).headers()
    assert set(every_field) <= OWN_HEADERS
    assert not propagate.get_global_textmap().fields & OWN_HEADERS  # traceparent, tracestate, baggage


# -- consumer ---------------------------------------------------------------------------------


def test_the_worker_span_is_a_child_of_the_producer_span(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    item = delivery(message, headers)
    seen_by_task = {}
    tracing.on_task_start(item)
    seen_by_task["span"] = trace.get_current_span()  # what a task running now would see
    succeeded(item)
    tracing.on_settled(item, Succeeded())
    tracing.on_task_succeeded(item)

    [producer] = spans(finished, SpanKind.PRODUCER)
    [consumer] = spans(finished, SpanKind.CONSUMER)
    assert consumer.name == f"process {plain.name}"
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.parent.is_remote
    assert seen_by_task["span"].get_span_context().span_id == consumer.context.span_id
    assert not trace.get_current_span().get_span_context().is_valid  # made current for the run only
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "rabbitmq", "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.destination.name": "orders", "messaging.message.id": "id-1", "taskq.task.name": plain.name,
        "taskq.task.attempt": 1, "messaging.rabbitmq.destination.routing_key": "orders",
        "messaging.rabbitmq.message.delivery_tag": 7, "taskq.task.outcome": "succeeded", "taskq.decision": "succeeded",
    }
    assert consumer.status.status_code == StatusCode.UNSET


def test_a_failure_records_the_exception_and_sets_error_status(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    run_to_failure(tracing, delivery(message, headers, attempts=2), KeyError("no such order"), Retry(countdown=4.0))
    [span] = spans(finished, SpanKind.CONSUMER)
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "KeyError: 'no such order'"
    [event] = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "KeyError"
    attributes = dict(span.attributes or {})
    assert attributes["taskq.task.attempt"] == 3 and attributes["taskq.task.outcome"] == "failed"
    assert attributes["taskq.decision"] == "retry" and attributes["taskq.retry.countdown"] == 4.0
    assert attributes["error.type"] == "KeyError"


def test_each_attempt_of_a_retried_message_is_a_child_of_the_one_producer_span(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    # The retry is the same message again with the original's headers (taskq.copies.resend_headers).
    run_to_failure(tracing, delivery(message, headers), ValueError("1"), Retry(countdown=0.1))
    final = failure("id-1", ValueError("2"))
    run_to_failure(tracing, delivery(message, headers, attempts=1), ValueError("2"),
                   dead_letter_failure(2, "retries-exhausted", final))
    [producer] = spans(finished, SpanKind.PRODUCER)
    attempts = spans(finished, SpanKind.CONSUMER)
    assert [(span.attributes or {})["taskq.task.attempt"] for span in attempts] == [1, 2]
    assert [(span.attributes or {})["taskq.decision"] for span in attempts] == ["retry", "dead_letter"]
    assert {span.context.trace_id for span in attempts} == {producer.context.trace_id}
    assert {span.parent.span_id for span in attempts if span.parent} == {producer.context.span_id}
    assert (attempts[1].attributes or {})["taskq.dead_letter.reason"] == "retries-exhausted"


def test_a_message_settled_without_running_gets_one_span_covering_its_handling(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    item = delivery(message, headers, expires=time.time() - 60)
    item.received_at -= 0.25  # received a moment ago
    decision = Expiry().before_run(item)
    assert isinstance(decision, DeadLetter)
    tracing.on_received(item)
    tracing.on_settled(item, decision)
    [producer] = spans(finished, SpanKind.PRODUCER)
    [span] = spans(finished, SpanKind.CONSUMER)
    assert span.parent is not None and span.parent.span_id == producer.context.span_id
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time - span.start_time >= 0.2e9  # it starts when the message arrived
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "dead-lettered: expired"
    attributes = dict(span.attributes or {})
    assert attributes["taskq.decision"] == "dead_letter" and attributes["taskq.dead_letter.reason"] == "expired"
    assert "taskq.task.outcome" not in attributes


def test_an_undecodable_message_gets_no_span(traced):
    tracing, finished = traced
    garbage = Delivery("orders", SimpleNamespace(headers={"traceparent": 5}, properties={}, body=b"\xc1"))
    tracing.on_settled(garbage, DeadLetter("undecodable-body", "..."))
    assert finished.get_finished_spans() == ()


def test_a_message_naming_no_task_of_ours_is_named_after_its_queue(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    unknown = delivery(TaskMessage(id="id-1", task="x" * 10_000), headers, task=None)
    tracing.on_settled(unknown, DeadLetter("unknown-task", "no task named ..."))
    [span] = spans(finished, SpanKind.CONSUMER)
    assert span.name == "process orders"
    assert len((span.attributes or {})["taskq.task.name"]) == 256  # a hostile name, bounded


def test_past_its_hard_time_limit_the_span_ends_once_on_the_watchdog_thread(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    item = delivery(message, headers, task=limited)
    item.time_limit = 5.0
    # In its own copy of the context: the span stays current on the task's thread, whose
    # process exits next in a real child, and must not leak into the tests that follow.
    contextvars.copy_context().run(tracing.on_task_start, item)

    def watchdog() -> None:  # what ChildWorker._hard_time_limit does, on the watchdog thread
        item.outcome = hard_limit_outcome(item)
        tracing.on_task_failed(item)
        assert item.outcome is not None
        tracing.on_settled(item, dead_letter_failure(1, "failed", item.outcome.reply))
        tracing.on_disconnect()  # then os._exit

    thread = threading.Thread(target=watchdog)
    thread.start()
    thread.join()
    [span] = spans(finished, SpanKind.CONSUMER)
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "taskq.errors.TimeLimitExceeded"
    assert [event.name for event in span.events] == ["exception"]
    tracing.on_worker_stop()  # nothing left open to end again
    assert len(spans(finished, SpanKind.CONSUMER)) == 1


def test_a_span_whose_settlement_never_came_is_ended_at_the_next_run_or_at_stop(traced):
    tracing, finished = traced
    message, headers = published(tracing)
    lost = delivery(message, headers)
    tracing.on_task_start(lost)  # then the connection broke mid-settle: no on_settled
    following = delivery(*published(tracing, message_id="id-2"))
    tracing.on_task_start(following)
    [unsettled] = spans(finished, SpanKind.CONSUMER)
    assert (unsettled.attributes or {})["messaging.message.id"] == "id-1"
    assert (unsettled.attributes or {})["taskq.decision"] == "unsettled"
    assert unsettled.status.status_code == StatusCode.ERROR
    tracing.on_worker_stop()
    assert [(span.attributes or {})["messaging.message.id"] for span in spans(finished, SpanKind.CONSUMER)] == ["id-1", "id-2"]
    assert not trace.get_current_span().get_span_context().is_valid


def test_spans_are_flushed_when_the_child_stops_or_disconnects(traced):
    """A worker child ends with os._exit, so the SDK's exit-time flush never runs."""
    held = InMemorySpanExporter()
    batching = TracerProvider()
    batching.add_span_processor(BatchSpanProcessor(held, schedule_delay_millis=3_600_000))
    try:
        tracing = Tracing(tracer_provider=batching)
        run_to_success(tracing, delivery(*published(tracing)))
        assert held.get_finished_spans() == ()  # held by the batch processor
        tracing.on_disconnect()
        assert len(held.get_finished_spans()) == 2
        run_to_success(tracing, delivery(*published(tracing, message_id="id-2")))
        tracing.on_worker_stop()
        assert len(held.get_finished_spans()) == 4
    finally:
        batching.shutdown()


# -- hostile headers -----------------------------------------------------------------------------

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("traceparent", [
    VALID.encode(),  # bytes: OpenTelemetry's default getter would hand the propagator a list of ints
    12345,
    ["00", "0af7651916cd43dd8448eb211c80319c"],
    {"traceparent": VALID},
    True,
    None,
    "",
    "not a traceparent",
    VALID + "x" * MAX_PROPAGATION_HEADER,  # huge
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # an all-zero trace id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # the forbidden version
    "\udcff\x00" * 100,  # lone surrogates and NULs
])
def test_a_malformed_traceparent_never_breaks_the_task_and_is_ignored(traced, traceparent):
    tracing, finished = traced
    message = TaskMessage(id="id-1", task=plain.name)
    headers = {**message.headers(), "traceparent": traceparent, "tracestate": b"\xff" * 10, "baggage": 7}
    item = delivery(message, headers)
    run_to_success(tracing, item)
    [span] = spans(finished, SpanKind.CONSUMER)
    assert span.parent is None  # a trace of its own
    assert (span.attributes or {})["taskq.decision"] == "succeeded"


def test_a_hostile_tracestate_or_baggage_beside_a_valid_traceparent_keeps_the_link(traced):
    tracing, finished = traced
    message = TaskMessage(id="id-1", task=plain.name)
    headers = {**message.headers(), "traceparent": VALID, "tracestate": "=" * 100_000, "baggage": ",;=%" * 5000}
    run_to_success(tracing, delivery(message, headers))
    [span] = spans(finished, SpanKind.CONSUMER)
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331


@settings(max_examples=200, deadline=None)
@given(traceparent=st.text(), tracestate=st.text(), baggage=st.text())
def test_any_text_in_the_propagation_headers_is_read_or_ignored_never_raised(traceparent, tracestate, baggage):
    private_provider, finished = in_memory_provider()
    tracing = Tracing(tracer_provider=private_provider)
    message = TaskMessage(id="id-1", task=plain.name)
    headers = {**message.headers(), "traceparent": traceparent, "tracestate": tracestate, "baggage": baggage}
    run_to_success(tracing, delivery(message, headers))
    [span] = finished.get_finished_spans()
    expected = trace.get_current_span(propagate.extract({"traceparent": traceparent})).get_span_context()
    assert (span.parent.span_id if span.parent else None) == (expected.span_id if expected.is_valid else None)


# -- through the worker loop (InlineWorker, in-memory broker) ----------------------------------------


@pytest.fixture
def taskq_app():
    return app


def test_through_the_worker_a_run_is_the_child_of_its_delay(taskq_worker):
    assert plain.delay(3).get(timeout=10) == 3
    taskq_worker.wait_until_idle()
    [producer] = spans(exporter, SpanKind.PRODUCER)
    [consumer] = spans(exporter, SpanKind.CONSUMER)
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert (consumer.attributes or {})["messaging.destination.name"] == app.default_queue


def test_through_the_worker_a_retried_task_has_a_span_per_attempt_in_one_trace(taskq_worker):
    with pytest.raises(TaskError, match="KeyError"):
        always_fails.delay().get(timeout=10)
    taskq_worker.wait_until_idle()
    [producer] = spans(exporter, SpanKind.PRODUCER)
    attempts = spans(exporter, SpanKind.CONSUMER)
    assert [(span.attributes or {})["taskq.decision"] for span in attempts] == ["retry", "dead_letter"]
    assert {span.context.trace_id for span in attempts} == {producer.context.trace_id}
    assert {span.parent.span_id for span in attempts if span.parent} == {producer.context.span_id}
    assert all(span.status.status_code == StatusCode.ERROR for span in attempts)


def test_without_the_tracing_extra_the_import_error_says_what_to_install(monkeypatch):
    # A None entry in sys.modules makes `import opentelemetry` raise ImportError, as if absent.
    for name in [name for name in sys.modules if name == "opentelemetry" or name.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "taskq.middleware.tracing")
    with pytest.raises(ImportError, match=re.escape("pip install 'taskq-rabbitmq[tracing]'")):
        importlib.import_module("taskq.middleware.tracing")
