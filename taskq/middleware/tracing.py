"""OpenTelemetry tracing as middleware: a PRODUCER span where a task is sent, a CONSUMER span
around its handling in the worker, joined by the W3C trace context the message carries.

The producer's context travels in the message's headers (``traceparent``, ``tracestate``,
and ``baggage``: whatever the configured propagator writes, through OpenTelemetry's own
propagator API, never formatted here). Those headers come off the wire: only string values
of the propagator's own fields, of a sane length, reach the propagator, which ignores what
it can't parse, so a hostile or broken header costs the trace link, never the task.

Every span started ends exactly once: a run's span ends when its message is settled
(``on_settled``); a message settled without running (expired, unknown task, early for its
eta) gets a span of its own then; one whose settlement was never reported (the connection
broke mid-settle, so the broker delivers it again) is ended, marked ``unsettled``, at the
next run or when the worker stops. A worker child ends with ``os._exit``, which skips the
SDK's exit-time flush, so the spans are flushed when the child disconnects or stops (also
on the hard-time-limit path, just before the child dies). See docs/middleware.md.
"""

from __future__ import annotations

import threading
import time
from contextvars import Token
from dataclasses import dataclass
from typing import Any, Mapping

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
except ModuleNotFoundError as missing:  # the tracing extra is not installed
    raise ModuleNotFoundError(
        "taskq's Tracing middleware needs OpenTelemetry: pip install 'taskq-rabbitmq[tracing]'", name=missing.name
    ) from missing

from taskq import __version__
from taskq.copies import BROKER_HEADER_PREFIXES, DEAD_LETTER_HEADERS
from taskq.message import TaskMessage
from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Redelay, Retry, Skip, Succeeded
from taskq.middleware.pipeline import Middleware

#: The headers taskq itself reads or writes (taskq/message.py, copies.py, app.publish): a
#: propagator configured to write one of these is not allowed to (the task would break).
OWN_HEADERS = frozenset({"task", "id", "attempts", "expires_at", "eta", "topic", *DEAD_LETTER_HEADERS})
#: The longest propagation header passed to the propagator: W3C baggage's own limit, the
#: largest of the W3C headers (``traceparent`` is 55 characters).
MAX_PROPAGATION_HEADER = 8192
#: Untrusted text (the task name of a message naming no task of ours) recorded at most this long.
MAX_ATTRIBUTE_TEXT = 256
MESSAGING_SYSTEM = "rabbitmq"  # the embedded broker speaks AMQP to kombu as RabbitMQ does

_DECISION_NAMES: dict[type, str] = {
    Succeeded: "succeeded", Retry: "retry", DeadLetter: "dead_letter", Skip: "skip", Redelay: "redelay",
}


@dataclass
class _OpenSpan:
    """A consumer span between its start and the settlement of its message."""

    span: Span
    thread: int  #: the thread that started it (a worker child's pipeline runs on one)
    token: Token[otel_context.Context] | None = None  #: set while it is the thread's current span


class Tracing(Middleware):
    """Traces each task from ``.delay()`` to its settlement in the worker (OpenTelemetry).

    ``tracer_provider``: where the spans go; default the global one (``trace.set_tracer_provider``),
    looked up when a span starts, so it may be configured after the App is built.
    ``flush_timeout``: seconds to wait for the exporter when a worker child disconnects or stops.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None, *, flush_timeout: float = 5.0) -> None:
        self.tracer_provider = tracer_provider
        self.flush_timeout = flush_timeout
        self.tracer = trace.get_tracer("taskq", __version__, tracer_provider=tracer_provider)
        self._open: dict[int, _OpenSpan] = {}  # by id() of the Delivery: one entry per message in hand
        self._lock = threading.Lock()  # the hard-time-limit path settles on the watchdog thread

    # -- producer ----------------------------------------------------------------------------

    def before_publish(self, message: TaskMessage, headers: dict[str, Any]) -> None:
        """A PRODUCER span for the message, its context injected into the headers.

        It marks the message's creation (operation ``create``): the hook runs before the
        publish and nothing runs after it, so the span does not time the broker's confirm.
        A message whose headers already carry a trace context keeps it, and gets no span
        (the messaging conventions' rule for a creation context the caller set).
        """
        fields = propagate.get_global_textmap().fields
        if any(field in headers for field in fields):
            return
        span = self.tracer.start_span(f"create {message.task}", kind=SpanKind.PRODUCER, attributes={
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
            "messaging.message.id": message.id,
            "taskq.task.name": message.task,
        })
        try:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            for key, value in carrier.items():
                if key not in headers and not is_taskq_header(key):
                    headers[key] = value
        finally:
            span.end()

    # -- worker --------------------------------------------------------------------------------

    def on_task_start(self, delivery: Delivery) -> None:
        """Start the CONSUMER span, a child of the producer's, and make it current for the task."""
        self._end_unsettled(only_this_thread=True)
        opened = self._start(delivery, start_time=None)
        # The task runs on this thread in a worker child, so spans it starts are children of
        # this one. (An in-process InlineWorker runs it on another thread: they are not.)
        opened.token = otel_context.attach(trace.set_span_in_context(opened.span))

    def on_task_failed(self, delivery: Delivery) -> None:
        """Record what the task raised (or its hard time limit) and mark the span an error."""
        opened = self._open.get(id(delivery))
        outcome = delivery.outcome
        if opened is None or outcome is None:
            return
        if outcome.exception is not None:
            opened.span.record_exception(outcome.exception)
        opened.span.set_attribute("error.type", outcome.reply.exc_type)
        opened.span.set_status(Status(StatusCode.ERROR, f"{outcome.reply.exc_type}: {outcome.reply.exc_message}"))

    def on_settled(self, delivery: Delivery, decision: Decision) -> None:
        """End the span with what became of the message; one settled without a run gets its span now."""
        with self._lock:
            opened = self._open.pop(id(delivery), None)
        if opened is None:
            if delivery.envelope is None:
                return  # undecodable: no message to speak of, only its dead letter
            opened = self._start(delivery, start_time=epoch_ns(delivery.received_at), keep=False)
        span = opened.span
        outcome = delivery.outcome
        if outcome is not None:
            span.set_attribute("taskq.task.outcome", "succeeded" if outcome.reply.ok else "failed")
        span.set_attributes(decision_attributes(decision))
        if isinstance(decision, DeadLetter) and (outcome is None or outcome.reply.ok):
            # Dead-lettered without a failed run (expired, unknown task, a worker error): an
            # error all the same. A failed run's status was set when it failed.
            span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {decision.reason}"))
        self._end(opened)

    def on_disconnect(self) -> None:
        self._end_unsettled(only_this_thread=True)
        self._flush()

    def on_worker_stop(self) -> None:
        self._end_unsettled(only_this_thread=False)
        self._flush()

    # -- the spans -----------------------------------------------------------------------------

    def _start(self, delivery: Delivery, start_time: int | None, keep: bool = True) -> _OpenSpan:
        parent = propagate.extract(propagation_headers(delivery.message.headers, propagate.get_global_textmap().fields),
                                   context=otel_context.Context())
        task_name = delivery.task.name if delivery.task is not None else None
        span = self.tracer.start_span(
            f"process {task_name or delivery.queue}",  # a message naming no task of ours: its queue
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=consumer_attributes(delivery),
            start_time=start_time,
        )
        opened = _OpenSpan(span, threading.get_ident())
        if keep:
            with self._lock:
                self._open[id(delivery)] = opened
        return opened

    def _end(self, opened: _OpenSpan) -> None:
        if opened.token is not None and opened.thread == threading.get_ident():
            # On another thread (the watchdog settling a task past its hard limit) the token
            # can't be reset, and needn't be: that child exits next.
            otel_context.detach(opened.token)
        opened.span.end()

    def _end_unsettled(self, *, only_this_thread: bool) -> None:
        """End the spans of messages whose settlement never came: the broker delivers them again."""
        me = threading.get_ident()
        with self._lock:
            stale = [key for key, opened in self._open.items() if not only_this_thread or opened.thread == me]
            unsettled = [self._open.pop(key) for key in stale]
        for opened in unsettled:
            opened.span.set_attribute("taskq.decision", "unsettled")
            opened.span.set_status(Status(StatusCode.ERROR, "not settled here: the broker delivers the message again"))
            self._end(opened)

    def _flush(self) -> None:
        """Export what the provider holds: a worker child ends with os._exit, past the SDK's atexit flush."""
        provider = self.tracer_provider or trace.get_tracer_provider()
        force_flush = getattr(provider, "force_flush", None)  # the SDK's provider has it, the API's no-op none
        if callable(force_flush):
            force_flush(int(self.flush_timeout * 1000))


def is_taskq_header(key: str) -> bool:
    return key in OWN_HEADERS or key.startswith(BROKER_HEADER_PREFIXES)


def propagation_headers(headers: Any, fields: set[str]) -> dict[str, str]:
    """The propagator's fields among a received message's headers: strings of a sane length only.

    Anything else (bytes, numbers, lists from a hostile producer, a megabyte of text) is left
    out: OpenTelemetry's default getter would hand a non-string to the propagator, which
    could raise on it.
    """
    if not isinstance(headers, Mapping):
        return {}
    carrier = {}
    for field in fields:
        value = headers.get(field)
        if isinstance(value, str) and len(value) <= MAX_PROPAGATION_HEADER:
            carrier[field] = value
    return carrier


def consumer_attributes(delivery: Delivery) -> dict[str, str | int]:
    """What is known when the span starts (so a sampler can use it), per the messaging conventions."""
    attributes: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": delivery.queue,
        "taskq.task.attempt": delivery.attempt,
    }
    envelope = delivery.envelope
    if envelope is not None:
        attributes["messaging.message.id"] = envelope.id
        attributes["taskq.task.name"] = envelope.task[:MAX_ATTRIBUTE_TEXT]
    routing_key = (getattr(delivery.message, "delivery_info", None) or {}).get("routing_key")
    if isinstance(routing_key, str) and routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key[:MAX_ATTRIBUTE_TEXT]
    delivery_tag = getattr(delivery.message, "delivery_tag", None)
    if isinstance(delivery_tag, int) and not isinstance(delivery_tag, bool):
        attributes["messaging.rabbitmq.message.delivery_tag"] = delivery_tag
    return attributes


def decision_attributes(decision: Decision) -> dict[str, str | float]:
    attributes: dict[str, str | float] = {"taskq.decision": _DECISION_NAMES.get(type(decision), type(decision).__name__)}
    if isinstance(decision, Retry):
        attributes["taskq.retry.countdown"] = decision.countdown
    elif isinstance(decision, DeadLetter):
        attributes["taskq.dead_letter.reason"] = decision.reason
    elif isinstance(decision, Skip) and decision.reason:
        attributes["taskq.skip.reason"] = decision.reason
    return attributes


def epoch_ns(monotonic: float) -> int:
    """A ``time.monotonic()`` instant as epoch nanoseconds, the clock spans are stamped with."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)
