"""``async def`` tasks and the awaitable client on the in-memory broker, through the real
worker loop (InlineWorker); the same against RabbitMQ and the embedded broker, in worker
subprocesses, is tests/integration/test_async.py."""

from __future__ import annotations

import asyncio

import pytest

from taskq import TaskError
from taskq.errors import ResultLost, UnsupportedTask
from tests.support.async_apps import (
    app as async_app, async_add, async_fail, async_past_soft_limit, async_whoami, sync_add,
)


@pytest.fixture
def taskq_app():
    return async_app


def test_async_and_sync_tasks_mix_in_one_worker(taskq_worker):
    results = [async_add.delay(i, 1) for i in range(10)] + [sync_add.delay(i, 2) for i in range(10)]
    assert [r.get(timeout=5) for r in results] == [i + 1 for i in range(10)] + [i + 2 for i in range(10)]


def test_an_async_task_sees_its_own_task_context(taskq_worker):
    result = async_whoami.delay()
    assert result.get(timeout=5) == result.id


def test_adelay_and_await_from_an_event_loop(taskq_worker):
    async def main() -> tuple[list[int], int]:
        sent = await asyncio.gather(*(async_add.adelay(i, 10) for i in range(50)))
        awaited = await asyncio.gather(*sent)  # ``await result``
        other = await (await sync_add.aapply_async((1, 2))).aget(timeout=5)
        return list(awaited), other

    assert asyncio.run(main()) == ([i + 10 for i in range(50)], 3)


def test_await_raises_the_tasks_error_and_times_out(taskq_worker):
    async def main() -> None:
        with pytest.raises(TaskError, match="ValueError: nope"):
            await (await async_fail.adelay("nope")).aget(timeout=5)
        taskq_worker.stop()
        pending = await async_add.adelay(1, 1)  # nobody consumes: no reply can come
        with pytest.raises(TimeoutError, match="no result for task"):
            await pending.aget(timeout=0.2)

    asyncio.run(main())


def test_awaiting_a_result_whose_connection_broke_raises_result_lost(taskq_test_app):
    async def main() -> None:
        pending = await async_add.adelay(1, 1)  # no worker: the reply is still owed
        waiter = asyncio.ensure_future(pending.aget(timeout=30))
        await asyncio.sleep(0)  # let the waiter register its future
        taskq_test_app._producer.reply_listener().stop()
        with pytest.raises(ResultLost):
            await waiter

    asyncio.run(main())


def test_async_event_handlers_are_refused_clearly():
    async def on_order(topic, payload):
        return None

    with pytest.raises(UnsupportedTask, match="async event handlers are not supported; make it a plain def"):
        async_app.on("orders.*")(on_order)


def test_the_soft_limit_cancels_a_sleeping_coroutine_and_fails_the_task(taskq_worker, tmp_path):
    seen = tmp_path / "seen"
    with pytest.raises(TaskError, match="SoftTimeLimitExceeded"):
        async_past_soft_limit.delay(str(seen)).get(timeout=10)  # the coroutine would sleep 30 s
    assert seen.read_text() == "CancelledError\n"
