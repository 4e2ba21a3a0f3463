"""What ``@app.task`` and ``@app.on`` refuse, at decoration, rather than at every call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from taskq import App, ConfigurationError, TaskqError
from taskq.errors import UnsupportedTask
from tests.conftest import ROOT


async def fetch(url):
    return url


def numbers(n):
    yield from range(n)


async def stream(n):
    yield n


async def on_order(topic, payload):
    return None


def test_async_def_task_is_refused_with_the_way_out():
    app = App("decoration")
    for decorate in (app.task, app.task(queue="io", ignore_result=True)):
        with pytest.raises(UnsupportedTask) as caught:
            decorate(fetch)
        assert str(caught.value) == (
            "task 'tests.test_task_decoration.fetch': async tasks are not supported yet;"
            " make it a plain def that calls asyncio.run(...) on the coroutine"
        )
    assert app.tasks == {}
    assert issubclass(UnsupportedTask, ConfigurationError) and issubclass(UnsupportedTask, TaskqError)


@pytest.mark.parametrize("function, kind", [(numbers, "a generator function"), (stream, "an async generator function")])
def test_generator_tasks_are_refused_because_their_body_would_never_run(function, kind):
    app = App("decoration")
    with pytest.raises(UnsupportedTask, match=f"^task '[^']+': {kind} can't be a task: calling it runs none of its body;"
                                              " return a list from a plain def instead$"):
        app.task(name="gen")(function)
    assert app.tasks == {}


def test_async_event_handler_is_refused():
    app = App("decoration")
    with pytest.raises(UnsupportedTask, match="async tasks are not supported yet"):
        app.on("orders.*")(on_order)
    assert app.tasks == {}


def test_worker_whose_app_has_an_async_task_prints_one_line_and_exits_2(tmp_path):
    (tmp_path / "async_app.py").write_text(
        "from taskq import App\napp = App('a')\n\n@app.task\nasync def fetch(url):\n    return url\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "worker", "-A", "async_app:app", "-c", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "TASKQ_BROKER_URL": f"taskq+sqlite://{tmp_path / 'broker.db'}"},
    )
    assert done.returncode == 2
    # One line, naming the user's own decorated line (the loader shows the user's frame).
    assert done.stderr.strip().splitlines() == [
        f"Error: -A 'async_app:app': {tmp_path / 'async_app.py'}:4: UnsupportedTask: task 'async_app.fetch':"
        " async tasks are not supported yet; make it a plain def that calls asyncio.run(...) on the coroutine"
    ]
