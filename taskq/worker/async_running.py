"""Calling an ``async def`` task: its coroutine runs to completion on an event loop of its own.

The task is called where a plain task would be (``running.run_task``, on the thread the
runner chose), so everything around a call holds for coroutines unchanged: one task at a
time per child with prefetch 1, the watchdog serving the connection meanwhile, the soft
time limit raised asynchronously in that thread (it surfaces inside the coroutine's
current step, or in the loop, which cancels the coroutine and raises it), and the hard
limit ending the process. The context (``taskq.current()``, structlog's bound variables)
is copied into the loop's task by asyncio. Several coroutines per child
(``--async-concurrency``) are not done yet: see docs/async.md.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def call(function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Call a task's function; a coroutine function is awaited on a fresh loop, its value returned."""
    if inspect.iscoroutinefunction(function):
        return asyncio.run(function(*args, **kwargs))
    return function(*args, **kwargs)
