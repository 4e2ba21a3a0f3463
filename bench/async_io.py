"""asyncio numbers: I/O-bound tasks in one worker child, and the awaitable client.

    python -m bench.async_io [--tasks 100]

1. tasks/s of ``await asyncio.sleep(0.05)`` tasks in one child (``-c 1``), against the same
   work as ``time.sleep(0.05)`` sync tasks at ``-c 2``;
2. the client: round-trip p50 of ``await task.adelay(...)`` + ``await result``, and the wall
   time of 1,000 awaits in flight at once from one process (one loop, no thread per await).
Numbers go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid

from kombu import Connection

from taskq import App

BROKER_URL = os.environ.get("TASKQ_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.setdefault("TASKQ_BENCH_ASYNC_QUEUE", f"bench-async-{uuid.uuid4().hex[:6]}")
app = App("bench-async", broker=BROKER_URL, default_queue=QUEUE)


@app.task
async def io_async() -> None:
    await asyncio.sleep(0.05)


@app.task
def io_sync() -> None:
    time.sleep(0.05)


@app.task
async def noop_async() -> None:
    return None


def start_worker(concurrency: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "taskq", "worker", "-A", "bench.async_io:app", "-Q", QUEUE, "-c", str(concurrency),
         "--broker", BROKER_URL, "--loglevel", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with Connection(BROKER_URL) as connection:
        while consumers(connection) < concurrency:
            time.sleep(0.05)  # a bench, not a test: polling the broker's consumer count is fine
    return process


def consumers(connection: Connection) -> int:
    try:
        return int(connection.channel().queue_declare(QUEUE, passive=True).consumer_count)
    except Exception:  # not declared yet by the worker
        return 0


async def rate(task: object, count: int) -> float:
    started = time.perf_counter()
    sent = await asyncio.gather(*(task.adelay() for _ in range(count)))  # type: ignore[attr-defined]
    await asyncio.gather(*(r.aget(timeout=300) for r in sent))
    return count / (time.perf_counter() - started)


async def round_trips(count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await (await noop_async.adelay())
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def in_flight(count: int) -> float:
    started = time.perf_counter()
    sent = await asyncio.gather(*(noop_async.adelay() for _ in range(count)))
    await asyncio.gather(*sent)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    try:
        worker = start_worker(1)
        try:
            print(f"async sleep(0.05), one child, N=1: {asyncio.run(rate(io_async, args.tasks)):.1f} tasks/s")
            print(f"client round trip p50 (adelay + await, 200 trips): {asyncio.run(round_trips(200)):.2f} ms")
            print(f"1,000 awaits in flight from one loop: {asyncio.run(in_flight(1000)):.2f} s wall, all replies back")
        finally:
            worker.terminate()
            worker.wait(30)
        worker = start_worker(2)
        try:
            print(f"sync time.sleep(0.05), -c 2: {asyncio.run(rate(io_sync, args.tasks)):.1f} tasks/s")
        finally:
            worker.terminate()
            worker.wait(30)
    finally:
        app.close()
        with Connection(BROKER_URL) as connection:
            for name in (QUEUE, f"{QUEUE}.dead"):
                connection.channel().queue_delete(name)


if __name__ == "__main__":
    main()
