"""Measure the cluster-wide rate limit: 3 worker processes under ``rate_limit="20/s"`` for 30 s.

    python -m bench.rate_limit                              # SQLite store, 30 s
    python -m bench.rate_limit --results redis://127.0.0.1:6379/15?prefix=bench-rate: --seconds 30

Enqueues ``rate * seconds`` tasks at once (a burst far above the limit), starts 3 worker
processes (``-c 1`` each), and reads the tasks' own start times (tests/support/apps_limits.py):
the rate is (N - 1) / (last start - first start), plus the most starts seen in any 1 s window.
Numbers go in docs/benchmarks.md ("Rate limits"); nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from pathlib import Path

from kombu import Connection

ROOT = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("TASKQ_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="state store URL (default: a fresh SQLite file)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-rate-"))
    results = args.results or f"sqlite://{work / 'results.db'}"
    os.environ["TASKQ_TEST_RESULTS"] = results
    sys.path.insert(0, str(ROOT))
    from tests.support.apps_limits import RATE, app, limited

    queue = f"bench.rate.{uuid.uuid4().hex[:8]}"
    record = work / "starts"
    app.use_broker(BROKER)
    total = int(RATE * args.seconds)
    for _ in range(total):
        limited.apply_async((str(record),), queue=queue)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "taskq", "worker", "-A", "tests.support.apps_limits:app",
                                 "-Q", queue, "-c", "1", "--broker", BROKER, "--loglevel", "warning"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(args.workers)]
    try:
        deadline = time.monotonic() + args.seconds * 3 + 60
        while time.monotonic() < deadline and (not record.exists() or len(record.read_text().splitlines()) < total):
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        with Connection(BROKER) as connection:
            connection.default_channel.queue_delete(queue)
        app.close()
    lines = [line.split() for line in record.read_text().splitlines()]
    times = sorted(float(t) for t, _ in lines)
    pids = {pid for _, pid in lines}
    span = times[-1] - times[0]
    window = max(bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    print(f"store={results.split('?')[0]} workers={args.workers} processes_seen={len(pids)} limit={RATE}/s "
          f"tasks={len(times)}/{total} span={span:.2f}s rate={(len(times) - 1) / span:.2f}/s "
          f"max_in_any_1s_window={window}")


if __name__ == "__main__":
    main()
