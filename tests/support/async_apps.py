"""The app of the async tests' worker subprocesses (``-A tests.support.async_apps:app``):
``async def`` tasks beside a plain one, in one app and one worker."""

from __future__ import annotations

import asyncio

from taskq import App, current

app = App("tests-async")


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)  # a real suspension: the loop runs the coroutine across steps
    return x + y


@app.task
async def async_whoami() -> str:
    await asyncio.sleep(0)
    return current().id


@app.task
async def async_fail(text: str) -> None:
    await asyncio.sleep(0)
    raise ValueError(text)


@app.task
async def async_started_then_sleeps(path: str, seconds: float) -> None:
    """Leaves a file once the coroutine runs, so a test waits on that, not on a sleep."""
    with open(path, "a") as marker:
        marker.write("started\n")
    await asyncio.sleep(seconds)


@app.task(soft_time_limit=0.3)
async def async_past_soft_limit(path: str) -> None:
    """Records what the coroutine saw when the soft limit ended it."""
    try:
        await asyncio.sleep(30)
    except BaseException as exc:
        with open(path, "a") as seen:
            seen.write(type(exc).__name__ + "\n")
        raise


@app.task
def sync_add(x: int, y: int) -> int:
    return x + y
