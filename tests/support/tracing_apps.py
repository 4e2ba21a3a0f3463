"""The app of tests/integration/test_tracing.py, loaded by its worker subprocesses (``-A tests.support.tracing_apps:app``).

Its Tracing middleware has a TracerProvider of its own (the global one is never set). In
the test process the spans stay in memory (``spans_in_memory``: the producer's); in a
worker, whose spans the test can't see, they are also written as JSON lines to the file
``$TASKQ_TRACING_TEST_SPANS`` names, one line per finished span, for the test to read.
With ``$TASKQ_TRACING_TEST_BATCH`` set they go through a batch processor that exports only
when flushed: what the worker child's flush on disconnect and stop makes of them is all
the test sees.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskq import App
from taskq.middleware import default_middleware
from taskq.middleware.tracing import Tracing
from tests.support.apps import append_line

SPANS_FILE_ENV = "TASKQ_TRACING_TEST_SPANS"
BATCH_ENV = "TASKQ_TRACING_TEST_BATCH"


class JsonLinesExporter(SpanExporter):
    """Each finished span as one JSON line (one write on an O_APPEND file: whole lines between processes)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            append_line(self.path, json.dumps(span_record(span)))
        return SpanExportResult.SUCCESS


def span_record(span: ReadableSpan) -> dict:
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "pid": os.getpid(),
    }


spans_in_memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans_in_memory))
if os.environ.get(SPANS_FILE_ENV):
    to_file = JsonLinesExporter(os.environ[SPANS_FILE_ENV])
    if os.environ.get(BATCH_ENV):
        provider.add_span_processor(BatchSpanProcessor(to_file, schedule_delay_millis=3_600_000))
    else:
        provider.add_span_processor(SimpleSpanProcessor(to_file))

app = App("tracingtests", middleware=[*default_middleware(), Tracing(tracer_provider=provider)])
tracer = provider.get_tracer("tests.support.tracing_apps")


@app.task
def work(value: int) -> int:
    """A span of the task's own, which should be a child of the worker's span."""
    with tracer.start_as_current_span("inside the task"):
        return value


@app.task(max_retries=2, retry_backoff=0.05, retry_jitter=False)
def fails_once(marker: str) -> str:
    """Raise on the first attempt (leaving a marker file), succeed on the retry."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise ValueError("the first attempt fails")
    return "second attempt"


@app.task(time_limit=0.5)
def stuck(seconds: float) -> None:
    """Sleeps past its hard time limit: the worker settles it, then its child dies."""
    time.sleep(seconds)
