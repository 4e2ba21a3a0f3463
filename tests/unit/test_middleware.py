"""The public extension API through the real worker loop (InlineWorker, in-memory broker):
App hooks, a user middleware's decisions and headers, and hooks that fail."""

from __future__ import annotations

from typing import Any

import pytest

from taskq import App, TaskError
from taskq.middleware import DeadLetter, Delivery, Middleware, Retries, Skip

app = App("middleware-tests")
seen: list[tuple[Any, ...]] = []


class Tracing(Middleware):
    """What a tracing middleware does: a header at .delay(), read back in the worker."""

    def before_publish(self, message, headers):
        headers["traceparent"] = f"00-{message.id.replace('-', '')[:32]:0<32}-{'1' * 16}-01"

    def on_task_start(self, delivery: Delivery) -> None:
        seen.append(("traceparent", delivery.message.headers.get("traceparent")))


class SkipNamed(Middleware):
    """A decision before the run: a task whose first argument is "skip" is acked, not run."""

    def before_run(self, delivery: Delivery):
        if delivery.envelope is not None and delivery.envelope.args[:1] == ("skip",):
            return Skip("asked to")
        return None


class Buggy(Middleware):
    def on_task_succeeded(self, delivery: Delivery) -> None:
        raise RuntimeError("a bug in a metrics exporter")


app.add_middleware(Tracing())
app.add_middleware(SkipNamed(), before=Retries)
app.add_middleware(Buggy())


@app.on_task_start
def started(delivery: Delivery) -> None:
    seen.append(("start", delivery.task.name, delivery.attempt))


@app.on_task_success
def succeeded(delivery: Delivery) -> None:
    seen.append(("success", delivery.outcome.reply.result))


@app.on_task_failure
def failed(delivery: Delivery) -> None:
    seen.append(("failure", type(delivery.outcome.exception).__name__))


@app.on_task_retry
def retried(delivery: Delivery, decision) -> None:
    seen.append(("retry", delivery.attempt))


@app.on_dead_letter
def dead(delivery: Delivery, decision: DeadLetter) -> None:
    seen.append(("dead", decision.reason))


@app.on_task_success
def also_buggy(delivery: Delivery) -> None:
    raise ValueError("an application hook that raises")


@app.task
def echo(value: str) -> str:
    seen.append(("ran", value))
    return value


@app.task(max_retries=1, retry_backoff=0)
def breaks() -> None:
    raise KeyError("always")


@pytest.fixture
def taskq_app():
    return app


@pytest.fixture(autouse=True)
def clear_seen():
    seen.clear()


def test_app_hooks_see_a_success_and_failing_hooks_do_not_stop_it(taskq_worker):
    assert echo.delay("hello").get(timeout=10) == "hello"
    taskq_worker.wait_until_idle()
    assert ("start", echo.name, 1) in seen and ("success", "hello") in seen
    assert seen.index(("ran", "hello")) < seen.index(("success", "hello"))
    assert echo.delay("again").get(timeout=10) == "again"  # the worker survived both broken hooks


def test_app_hooks_see_a_failure_its_retry_and_its_dead_letter_in_order(taskq_worker):
    with pytest.raises(TaskError, match="KeyError"):
        breaks.delay().get(timeout=10)
    taskq_worker.wait_until_idle()
    events = [entry for entry in seen if entry[0] in ("failure", "retry", "dead")]
    assert events == [("failure", "KeyError"), ("retry", 1), ("failure", "KeyError"), ("dead", "retries-exhausted")]


def test_a_header_added_at_publish_reaches_the_worker(taskq_worker):
    result = echo.delay("traced")
    assert result.get(timeout=10) == "traced"
    [(_, traceparent)] = [entry for entry in seen if entry[0] == "traceparent"]
    assert traceparent.startswith("00-" + result.id.replace("-", "")[:8])


def test_a_skip_decision_acks_without_running_or_dead_lettering(taskq_test_app, taskq_worker):
    echo.delay("skip")
    taskq_worker.wait_until_idle()
    assert ("ran", "skip") not in seen and not [entry for entry in seen if entry[0] == "start"]
    with taskq_test_app.broker.connect() as connection:
        channel = connection.default_channel
        assert channel.basic_get("default", no_ack=True) is None
        assert channel.basic_get("default.dead", no_ack=True) is None


def test_the_examples_in_docs_middleware_md_run():
    """Each python block of docs/middleware.md declares an app with middleware and hooks; it must run."""
    import re

    from tests.support import ROOT

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "middleware.md").read_text(), flags=re.DOTALL)
    assert len(blocks) == 3  # the third: OpenTelemetry tracing
    for block in blocks:
        namespace: dict[str, Any] = {"__name__": "docs_middleware"}
        exec(compile(block, "docs/middleware.md", "exec"), namespace)
        assert namespace["app"].middleware
