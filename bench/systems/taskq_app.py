"""The taskq app both the harness and ``taskq worker -A bench.systems.taskq_app:app`` import.

taskq's defaults already are the shared settings (durable queue, persistent, confirmed publish,
prefetch 1 per child, ack after run, msgpack bodies), so nothing is configured here beyond the
queue.
"""

from __future__ import annotations

import os

from bench.common import BROKER_URL, queue_name, record_mark
from taskq import App

QUEUE = queue_name("taskq")
#: A state store to measure what it costs (docs/benchmarks.md, "The state store"): e.g.
#: ``TASKQ_BENCH_RESULTS=redis://127.0.0.1:6379/0?prefix=bench:``. Unset: RPC only, the default.
RESULTS = os.environ.get("TASKQ_BENCH_RESULTS") or None

app = App("bench", broker=BROKER_URL, results=RESULTS)


@app.task(queue=QUEUE, ignore_result=True)
def noop(mark: str | None = None) -> None:
    """No-op; the first/last pre-loaded message records its time (bench.common.record_mark)."""
    record_mark(mark)


@app.task(queue=QUEUE)
def noop_result() -> None:
    """No-op whose (None) result comes back over taskq's RPC reply queue."""
