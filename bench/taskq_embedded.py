"""taskq itself on the embedded broker: drain rate with ``taskq worker -c 2`` and RPC round trips.

    python bench/taskq_embedded.py [--depth 10000] [--round-trips 1000]

Targets (issue: embedded default broker): at least 1,000 tasks/s drained with -c 2 from a
depth of 10,000, and an RPC round trip p50 of at most 20 ms. For scale, the same run also
drains the same depth from RabbitMQ if it answers on 127.0.0.1:5672, and prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taskq import App  # noqa: E402

QUEUE = "bench.embedded"
app = App("bench_embedded", default_queue=QUEUE)


@app.task(name="bench.embedded.noop")  # run as a script, the module is __main__: name it
def noop(*args):
    return None


def queue_state(url: str) -> tuple[int, int]:
    with App(broker=url).broker.connect() as connection:
        channel = connection.channel()
        try:
            _, ready, consumers = channel.queue_declare(queue=QUEUE, passive=True)
        except Exception:
            return -1, 0
        return ready, consumers


def start_worker(url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "taskq", "worker", "-A", "bench.taskq_embedded:app", "-c", "2",
         "--broker", url, "--loglevel", "warning"],
        cwd=ROOT, stderr=subprocess.DEVNULL,
    )


def stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)


def drain(url: str, depth: int) -> float:
    app.use_broker(url)
    noop.map([()] * depth)
    app.close()
    worker = start_worker(url)
    try:
        while queue_state(url)[1] < 2:
            time.sleep(0.005)
        started = time.perf_counter()
        while queue_state(url)[0] > 0:
            time.sleep(0.01)
        return depth / (time.perf_counter() - started)
    finally:
        stop(worker)


def round_trips(url: str, n: int) -> list[float]:
    app.use_broker(url)
    worker = start_worker(url)
    try:
        while queue_state(url)[1] < 2:
            time.sleep(0.005)
        for _ in range(20):
            noop.delay().get(timeout=10)
        timings = []
        for _ in range(n):
            started = time.perf_counter()
            noop.delay().get(timeout=10)
            timings.append((time.perf_counter() - started) * 1000)
        return sorted(timings)
    finally:
        stop(worker)
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=10_000)
    parser.add_argument("--round-trips", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        url = f"taskq+sqlite://{home}/broker.db"
        rate = drain(url, args.depth)
        timings = round_trips(url, args.round_trips)
    p50, p99 = statistics.median(timings), timings[int(len(timings) * 0.99) - 1]
    print(f"taskq on the embedded broker ({os.cpu_count()} cores)")
    print(f"  drain {args.depth} tasks, taskq worker -c 2: {rate:8.0f} tasks/s   (target >= 1000)")
    print(f"  RPC round trip x{args.round_trips}: p50 {p50:.2f} ms, p99 {p99:.2f} ms   (target p50 <= 20 ms)")
    rabbit = "amqp://guest:guest@127.0.0.1:5672//"
    try:
        rabbit_rate = drain(rabbit, args.depth)
    except Exception as exc:  # RabbitMQ is optional here
        print(f"  RabbitMQ not measured: {exc}")
        return
    finally:
        with App(broker=rabbit).broker.connect() as connection:
            for name in (QUEUE, QUEUE + ".dead"):
                try:
                    connection.channel().queue_delete(name)
                except Exception:
                    pass
    print(f"  same drain on RabbitMQ, same minute:  {rabbit_rate:8.0f} tasks/s   (embedded/RabbitMQ = {rate / rabbit_rate:.2f})")


if __name__ == "__main__":
    main()
