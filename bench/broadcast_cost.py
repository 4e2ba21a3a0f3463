"""What broadcasting logs and lifecycle events costs a worker: N no-op tasks, -c 2, three ways.

    PYTHONPATH=. python bench/broadcast_cost.py [--n 2000] [--rounds 2] [--broker URL]

Modes: ``off`` (TASKQ_BROADCAST=off: nothing leaves the worker but heartbeats), ``on``
(records published to the fanouts, nobody listening, so the broker discards them) and
``listened`` (one ``taskq logs --json`` writing to /dev/null), and ``unbatched`` (one
message per record, flushed every loop: the first design, for comparison). The N tasks are queued
first; the time is from the first "task started" to the last "task succeeded" in the
worker's own JSON log, so worker start-up is not counted; the children's CPU time per
task (from /proc, median) is the steadier number on a busy machine. Each task logs two lines
(started, succeeded) and emits three lifecycle events (received, started, succeeded).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from kombu import Connection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_done(n: int, log_path: str, timeout: float = 120, consuming: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as log:
            text = log.read()
        if text.count('"task succeeded"') >= n and text.count('"consuming"') >= consuming:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{n} tasks not done in {timeout} s")


def timestamps(log_path: str) -> tuple[float, float]:
    started, finished = [], []
    with open(log_path) as log:
        for line in log:
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            when = dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
            if record["event"] == "task started":
                started.append(when)
            elif record["event"] == "task succeeded":
                finished.append(when)
    return min(started), max(finished)


def children_cpu(pid: int) -> float:
    """User + system CPU seconds of a process's children, from /proc."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    ticks = 0
    for child in children:
        with open(f"/proc/{child}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run(url: str, n: int, mode: str) -> tuple[float, float]:
    from tests.support.event_apps import app, noop

    queue = f"bench.broadcast.{uuid.uuid4().hex[:8]}"
    app.use_broker(url)
    env = {**os.environ, "PYTHONPATH": ROOT, "TASKQ_BROADCAST": "off" if mode == "off" else "on"}
    if mode == "unbatched":  # one message per record, flushed on every loop: the first design
        env.update(TASKQ_BROADCAST_BATCH="1", TASKQ_BROADCAST_INTERVAL="0")
    listener = None
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "worker.log")
        try:
            if mode == "listened":
                listener = subprocess.Popen(
                    [sys.executable, "-m", "taskq", "logs", "--json", "--broker", url],
                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                time.sleep(1.5)  # a benchmark, not a test: let it bind before the worker starts
            with open(log_path, "w") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "taskq", "worker", "-A", "tests.support.event_apps:app", "-Q", queue, "-c", "2",
                     "--broker", url, "--log-format", "json"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            try:
                wait_done(0, log_path, consuming=2)
                cpu_before = children_cpu(worker.pid)
                noop.map([()] * n, queue=queue)
                wait_done(n, log_path)
                cpu = children_cpu(worker.pid) - cpu_before
            finally:
                app.close()
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
            first, last = timestamps(log_path)
            return last - first, cpu
        finally:
            if listener is not None:
                listener.send_signal(signal.SIGINT)
                listener.wait(10)
            with Connection(url) as connection:
                for name in (queue, queue + ".dead"):
                    connection.channel().queue_delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--broker", default=os.environ.get("TASKQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"))
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": [], "listened": [], "unbatched": []}
    for round_number in range(args.rounds):
        modes = list(results) if round_number % 2 == 0 else list(reversed(results))  # cancel drift
        for mode in modes:
            results[mode].append(run(args.broker, args.n, mode))
    for mode, runs in results.items():
        best = min(wall for wall, _ in runs)
        cpu = sorted(cpu for _, cpu in runs)[len(runs) // 2]
        print(
            f"{mode:>9}: {args.n / best:6.0f} tasks/s (best of {args.rounds}; walls {', '.join(f'{w:.2f}' for w, _ in runs)} s), "
            f"children's CPU {1e6 * cpu / args.n:5.0f} us/task (median)"
        )


if __name__ == "__main__":
    main()
