"""Profile one worker child draining pre-loaded no-op tasks, in this process.

    py-spy record -f raw -o child.txt -- python -m bench.profile_child 20000

Runs ``ChildWorker`` as ``taskq worker`` runs it in a forked child (task on the main
thread, watchdog thread, broadcaster installed), on the local RabbitMQ
(``TASKQ_BENCH_BROKER_URL`` to change), and prints CPU and wall time per task. Pass
``--cprofile`` for a cProfile table instead of using py-spy, sorted by ``--sort KEY``
(pstats keys, default ``tottime``; ``cumulative`` shows which steps of a task cost what).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

from bench.common import BROKER_URL, delete_queues, queue_name
from taskq import App
from taskq.logs import configure_logging
from taskq.middleware.lifecycle_events import LifecycleEvents
from taskq.worker.child import ChildWorker, WorkerSetup

QUEUE = queue_name("profile")
app = App("profile", broker=BROKER_URL)
worker: ChildWorker | None = None


@app.task(queue=QUEUE, ignore_result=True, name="profile.noop")
def noop(last: bool = False) -> None:
    if last and worker is not None:
        worker.stopping = True  # the last message ends the run


def main(argv: list[str]) -> None:
    global worker
    n = int(argv[0]) if argv and argv[0].isdigit() else 10_000
    configure_logging("warning")
    noop.map([()] * (n - 1) + [(True,)])
    setup = WorkerSetup.from_app(app, [QUEUE], [LifecycleEvents.from_env(app.name, [QUEUE])])
    worker = ChildWorker(setup, owns_process=True)
    profiler = cProfile.Profile() if "--cprofile" in argv else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    try:
        worker.run()
    finally:
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        app.close()
        delete_queues([QUEUE, f"{QUEUE}.dead"])
    print(f"{n} tasks: {n / wall:,.0f} tasks/s, CPU {cpu / n * 1e6:.0f} µs/task, wall {wall / n * 1e6:.0f} µs/task")
    if profiler:
        sort_key = argv[argv.index("--sort") + 1] if "--sort" in argv else "tottime"
        pstats.Stats(profiler).sort_stats(sort_key).print_stats(60)


if __name__ == "__main__":
    main(sys.argv[1:])
