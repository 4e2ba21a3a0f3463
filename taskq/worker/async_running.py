"""Calling an ``async def`` task: its coroutine runs to completion on an event loop of its own.

The task is called where a plain task would be (``running.run_task``, on the thread the
runner chose), so everything around a call holds for coroutines unchanged: one task at a
time per child with prefetch 1, the watchdog serving the connection meanwhile, the soft
time limit raised asynchronously in that thread (see ``WAKE``), and the hard
limit ending the process. The context (``taskq.current()``, structlog's bound variables)
is copied into the loop's task by asyncio. Several coroutines per child
(``--async-concurrency``) are not done yet: see docs/async.md.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any


#: Seconds between the loop's wake-ups while a coroutine runs. The soft time limit arrives as
#: an asynchronous exception in this thread (limits.TaskThreadGuard), which Python delivers
#: only while bytecode runs, never while the loop sleeps in epoll for the task's I/O: a
#: ticking task bounds how late it is raised.
WAKE = 0.1


def call(function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Call a task's function; a coroutine function is awaited on a fresh loop, its value returned."""
    if inspect.iscoroutinefunction(function):
        return asyncio.run(_awake(function(*args, **kwargs)))
    return function(*args, **kwargs)


async def _awake(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run the task's coroutine with the loop woken every ``WAKE`` s. A soft limit raised in
    the loop ends ``asyncio.run``, which cancels the coroutine (it sees CancelledError and
    may clean up); the task then fails with SoftTimeLimitExceeded."""
    ticker = asyncio.ensure_future(_tick())
    try:
        return await coroutine
    finally:
        ticker.cancel()


async def _tick() -> None:
    while True:
        await asyncio.sleep(WAKE)
