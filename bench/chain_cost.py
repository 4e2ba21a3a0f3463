"""What one chain step costs against an independent round trip, same process, same worker.

    python -m bench.chain_cost [--steps 20] [--repeat 5] [--broker URL]

A chain of ``--steps`` no-op steps (``add.s(0, 0) | add.s(1) | ...``: the worker publishes each
next step, confirmed, before it acks the current one; one reply at the end) against the same
number of sequential ``add.delay(...).get()`` round trips (a publish, a run, a reply each), against
one ``taskq worker -c 1``. Prints the medians per step and their ratio; numbers go to
docs/benchmarks.md ("Workflows: a chain step"), with the machine. Default broker: the local
RabbitMQ; ``--broker taskq+sqlite:///tmp/x/broker.db`` for the embedded one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kombu import Connection

from taskq import App, chain

QUEUE = os.environ.get("TASKQ_BENCH_CHAIN_QUEUE", "bench.chain_cost")
app = App("bench-chain", default_queue=QUEUE)


@app.task(name="chain_cost.add")
def add(x: int, y: int) -> int:
    return x + y


def start_worker(broker: str) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TASKQ_BENCH_CHAIN_QUEUE": QUEUE}
    worker = subprocess.Popen([sys.executable, "-m", "taskq", "worker", "-A", "bench.chain_cost:app", "-Q", QUEUE,
                               "-c", "1", "--broker", broker, "--loglevel", "warning"], cwd=root, env=env)
    with Connection(broker) as connection:  # wait until it consumes
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if connection.default_channel.queue_declare(QUEUE, passive=True)[2] >= 1:
                    return worker
            except Exception:
                connection.close()
                connection = Connection(broker)
            time.sleep(0.05)
    raise SystemExit("the worker never started consuming")


def per_step_chain(steps: int) -> float:
    started = time.perf_counter()
    assert chain(add.s(0, 0), *[add.s(1) for _ in range(steps - 1)]).delay().get(timeout=120) == steps - 1
    return (time.perf_counter() - started) / steps


def per_round_trip(steps: int) -> float:
    started = time.perf_counter()
    for i in range(steps):
        assert add.delay(i, 1).get(timeout=60) == i + 1
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--broker", default=os.environ.get("TASKQ_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"))
    options = parser.parse_args()
    app.use_broker(options.broker)
    worker = start_worker(options.broker)
    try:
        per_step_chain(5), per_round_trip(5)  # warm up both paths
        chains = [per_step_chain(options.steps) for _ in range(options.repeat)]
        trips = [per_round_trip(options.steps) for _ in range(options.repeat)]
    finally:
        worker.terminate()
        worker.wait(30)
        app.close()
    chain_ms, trip_ms = statistics.median(chains) * 1000, statistics.median(trips) * 1000
    print(f"broker {options.broker.split('://')[0]}: {options.steps} steps x {options.repeat}: "
          f"chain {chain_ms:.2f} ms/step (range {min(chains)*1000:.2f}-{max(chains)*1000:.2f}), "
          f"round trip {trip_ms:.2f} ms/task (range {min(trips)*1000:.2f}-{max(trips)*1000:.2f}), "
          f"chain/round trip {chain_ms / trip_ms:.2f}")


if __name__ == "__main__":
    main()
