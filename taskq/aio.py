"""The caller's side of asyncio: publishing from an event loop without blocking it.

A publish waits for the broker's confirm; kombu's connection is blocking, so the send runs
on a small pool of sender threads and the loop awaits it. The pool is bounded
(``settings.ASYNC_SENDER_THREADS``): a thousand concurrent ``adelay`` calls queue for a
few threads instead of opening a thousand. Waiting for results needs no thread at all:
the reply listener resolves an asyncio future (taskq/results.py, ``ReplyListener.await_reply``).
Why kombu in threads and not an asyncio AMQP client: see docs/async.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from taskq import settings

Sent = TypeVar("Sent")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def sender_pool() -> ThreadPoolExecutor:
    """The process's sender threads, started on the first async send (forked children make their own)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=settings.ASYNC_SENDER_THREADS, thread_name_prefix="taskq-sender")
        return _pool


async def in_sender_thread(send: Callable[[], Sent]) -> Sent:
    """Run a blocking send on a sender thread; the loop serves other coroutines meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(sender_pool(), send)
