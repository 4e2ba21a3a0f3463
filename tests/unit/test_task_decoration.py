"""What ``@app.task`` and ``@app.on`` refuse, at decoration, rather than at every call (the
worker's refusal of such an app is in tests/integration/test_task_decoration.py)."""

from __future__ import annotations

import pytest

from taskq import App, ConfigurationError, TaskqError
from taskq.errors import UnsupportedTask


async def fetch(url):
    return url


def numbers(n):
    yield from range(n)


async def stream(n):
    yield n


async def on_order(topic, payload):
    return None


def test_async_def_task_is_accepted():
    app = App("decoration")
    task = app.task(fetch)
    assert app.tasks == {task.name: task}


@pytest.mark.parametrize("function, kind", [(numbers, "a generator function"), (stream, "an async generator function")])
def test_generator_tasks_are_refused_because_their_body_would_never_run(function, kind):
    app = App("decoration")
    with pytest.raises(UnsupportedTask, match=f"^task '[^']+': {kind} can't be a task: calling it runs none of its body;"
                                              " return a list from a plain def instead$"):
        app.task(name="gen")(function)
    assert app.tasks == {}


def test_async_event_handler_is_refused():
    app = App("decoration")
    with pytest.raises(UnsupportedTask, match="async event handlers are not supported"):
        app.on("orders.*")(on_order)
    assert app.tasks == {}
