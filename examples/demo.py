"""End-to-end demo: start a worker, send tasks, print their results, stop the worker.

    python -m examples.demo

Uses the broker taskq would use for you: $TASKQ_BROKER_URL, else the default.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from examples.shop import add, app, place_order


def main() -> int:
    print(f"taskq demo: broker {app.broker.masked_url}", flush=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskq", "worker", "-A", "examples.shop:app", "-c", "2", "--loglevel", "warning"],
    )
    try:
        started = time.perf_counter()
        results = [add.delay(i, i) for i in range(10)]
        print(f"sent 10 add tasks (each confirmed by the broker) in {time.perf_counter() - started:.3f} s", flush=True)
        print("results:", [result.get(timeout=30) for result in results], flush=True)
        print("order:", place_order.delay("socks", 2).get(timeout=30), flush=True)
        started = time.perf_counter()
        for _ in range(100):
            add.delay(1, 2).get(timeout=30)
        print(f"100 sequential round trips: {(time.perf_counter() - started) * 10:.2f} ms each", flush=True)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        app.close()
    print(f"worker stopped cleanly (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
