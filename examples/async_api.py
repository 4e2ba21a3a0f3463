"""docs/async.md's FastAPI example: an endpoint that enqueues a task and awaits its result
without blocking the event loop (run by tests/unit/test_async_fastapi.py)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from taskq import App

app = App("crawler")


@app.task
async def fetch(url: str) -> int:
    await asyncio.sleep(0)  # your aiohttp/httpx call
    return len(url)


api = FastAPI()


@api.post("/fetch")
async def start_fetch(url: str) -> dict[str, object]:
    result = await fetch.adelay(url)  # the request's loop is never blocked
    return {"task_id": result.id, "length": await result.aget(timeout=30)}
