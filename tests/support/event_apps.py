"""Apps for the events, routing and operator-CLI tests (loaded by worker subprocesses with -A).

Exchange, queue and topic names start with ``PREFIX``, unique per test session and passed to
the worker subprocesses through the environment, so runs never see each other's messages.
"""

from __future__ import annotations

import os
import time
import uuid

import structlog

from taskq import App, get_logger
from tests.support.apps import append_line

PREFIX = os.environ.setdefault("TASKQ_EVENTS_TEST_PREFIX", f"evt{uuid.uuid4().hex[:8]}")

# -- logs and status ---------------------------------------------------------------------

app = App("evtests", default_queue=f"{PREFIX}.default")


@app.task
def chatty(count: int, tag: str, level: str = "info") -> int:
    """Log ``count`` lines through structlog, as a user's task would."""
    log = structlog.get_logger()
    for index in range(count):
        getattr(log, level)("chatty line", tag=tag, index=index)
    return count


@app.task
def noop() -> None:
    return None


@app.task
def sleepy(seconds: float) -> float:
    get_logger().info("sleeping", seconds=seconds)
    time.sleep(seconds)
    return seconds


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(max_retries=1, retry_backoff=0.05, retry_jitter=False)
def fails_twice(message: str) -> None:
    raise ValueError(message)


# -- routing through named exchanges -------------------------------------------------------

ANIMALS = f"{PREFIX}.animals"
SEVERITY = f"{PREFIX}.severity"
routed = App("evrouted", default_queue=f"{PREFIX}.routed")
routed.bind(f"{PREFIX}.orange", ANIMALS, "*.orange.*")
routed.bind(f"{PREFIX}.rabbit", ANIMALS, "*.*.rabbit")
routed.bind(f"{PREFIX}.rabbit", ANIMALS, "lazy.#")
routed.bind(f"{PREFIX}.errors", SEVERITY, "error", exchange_type="direct")
routed.bind(f"{PREFIX}.all-severities", SEVERITY, "error", exchange_type="direct")
routed.bind(f"{PREFIX}.all-severities", SEVERITY, "info", exchange_type="direct")


def current_queue() -> str:
    """The queue this run came from, as the worker bound it to the task's log context."""
    return structlog.contextvars.get_contextvars().get("queue", "?")


@routed.task(exchange=ANIMALS, routing_key="quick.orange.rabbit")
def animal(path: str, key: str) -> None:
    append_line(path, f"{key} {current_queue()}")


@routed.task(exchange=SEVERITY)
def severity(path: str, level: str) -> None:
    append_line(path, f"{level} {current_queue()}")


# -- two apps integrated by user events ----------------------------------------------------

shop = App("evshop", default_queue=f"{PREFIX}.shop")
billing = App("evbilling", default_queue=f"{PREFIX}.billing-tasks")


@billing.on(f"{PREFIX}.order.*", group=f"{PREFIX}-billing")
def bill(topic: str, payload: dict) -> None:
    append_line(payload["path"], f"billing {topic} {payload['order']}")


@billing.on(f"{PREFIX}.#.created", group=f"{PREFIX}-audit")
def audit(topic: str, payload: dict) -> None:
    append_line(payload["path"], f"audit {topic} {payload['order']}")
