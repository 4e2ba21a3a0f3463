"""``async def`` tasks in a real ``taskq worker`` beside sync ones, and the awaitable client,
on RabbitMQ and the embedded broker (the in-memory version: tests/unit/test_async_unit.py)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.both_brokers

from taskq import TaskError
from tests.support.async_apps import app as async_app, async_add, async_fail, async_started_then_sleeps, sync_add
from tests.support.cli_helpers import ready_and_unacked
from tests.support.waiting import wait_until


@pytest.fixture
def aapp(broker_url: str):
    async_app.use_broker(broker_url)
    yield async_app
    async_app.close()


def test_one_worker_runs_async_and_sync_tasks_awaited_from_a_loop(aapp, queue_name, start_worker):
    start_worker([queue_name], concurrency=1, app="tests.support.async_apps:app")

    async def main() -> tuple[list[int], list[int]]:
        sent = await asyncio.gather(*(async_add.aapply_async((i, 1), queue=queue_name) for i in range(100)))
        plain = await asyncio.gather(*(sync_add.aapply_async((i, 2), queue=queue_name) for i in range(20)))
        return list(await asyncio.gather(*(r.aget(timeout=60) for r in sent))), list(await asyncio.gather(*plain))

    assert asyncio.run(main()) == ([i + 1 for i in range(100)], [i + 2 for i in range(20)])
    # the sync client gets an async task's result too
    assert async_add.apply_async((2, 3), queue=queue_name).get(timeout=30) == 5


def test_an_async_tasks_exception_reaches_the_awaiting_caller(aapp, queue_name, start_worker):
    start_worker([queue_name], concurrency=1, app="tests.support.async_apps:app")

    async def main() -> None:
        result = await async_fail.aapply_async(("broken",), queue=queue_name)
        with pytest.raises(TaskError, match="ValueError: broken"):
            await result.aget(timeout=30)

    asyncio.run(main())


def test_a_child_running_a_coroutine_holds_one_message(aapp, queue_name, start_worker, tmp_path, broker_url):
    """Prefetch 1 holds for async tasks: the broker keeps the others READY while a coroutine runs."""
    start_worker([queue_name], concurrency=1, app="tests.support.async_apps:app")
    marker = tmp_path / "started"
    for _ in range(3):
        async_started_then_sleeps.apply_async((str(marker), 120.0), queue=queue_name)  # killed at teardown
    wait_until(marker.exists, timeout=60, what="the first coroutine to start")
    assert ready_and_unacked(broker_url, queue_name) == (2, 1)
