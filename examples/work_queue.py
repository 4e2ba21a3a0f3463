"""Work queues: tasks spread over two workers, and fair dispatch.

    python -m examples.work_queue

Part 1 sends eight equal tasks to two worker processes: they take turns (round robin).
Part 2 sends one long task, then six short ones. Each worker holds at most one unacked
message (prefetch=1), so the short tasks all go to the worker that is free instead of
queueing behind the long one: they finish long before it does.
"""

from __future__ import annotations

import os
import time

from examples._workers import running_workers
from taskq import App

app = App("work_queue", default_queue="examples.work")


@app.task
def work(name: str, seconds: float) -> dict:
    started = time.time()
    time.sleep(seconds)
    return {"name": name, "worker": os.getpid(), "started": started, "finished": time.time()}


def main() -> None:
    with running_workers(app, "examples.work_queue:app", count=2, concurrency=1):
        work.delay("warm-up", 0).get(timeout=30)
        print("Round robin: 8 tasks of 0.2 s over 2 workers")
        for row in [r.get(timeout=30) for r in [work.delay(f"task{i}", 0.2) for i in range(8)]]:
            print(f"  {row['name']:<8} ran on worker {row['worker']}")

        print("Fair dispatch: one 3 s task, then 6 tasks of 0.1 s")
        t0 = time.time()
        long = work.delay("long", 3.0)
        time.sleep(0.2)  # let the long task reach a worker first, as in real life
        shorts = [work.delay(f"short{i}", 0.1) for i in range(6)]
        rows = [r.get(timeout=30) for r in shorts] + [long.get(timeout=30)]
        for row in sorted(rows, key=lambda r: r["finished"]):
            print(f"  {row['name']:<8} on worker {row['worker']}  finished at {row['finished'] - t0:5.2f} s")
        long_row = rows[-1]
        ok = all(r["finished"] < long_row["finished"] and r["worker"] != long_row["worker"] for r in rows[:-1])
        print(f"  every short task finished before the long one, on the other worker: {ok}")
    app.close()


if __name__ == "__main__":
    main()
