"""taskq itself: ``.delay()`` with confirms, ``taskq worker -c 2``, results over its RPC queue.

taskq is under construction, so ``load()`` checks for the API this runner uses and reports what
is missing (the row then reads "unavailable: ...") instead of failing the whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import (
    BROKER_URL,
    Unavailable,
    WorkerProcesses,
    delete_queues,
    python_command,
    time_calls,
)

try:
    import taskq
    import taskq.cli  # the worker command must exist too
    from bench.systems import taskq_app
except Exception as exc:  # anything wrong with a half-written taskq means "unavailable"
    raise Unavailable(f"cannot import taskq ({type(exc).__name__}: {exc})") from exc


def _check_api() -> None:
    for obj, attr in [(taskq_app.noop, "delay"), (taskq_app.noop_result, "delay"), (taskq_app.app, "close")]:
        if not hasattr(obj, attr):
            raise Unavailable(f"taskq API missing: {type(obj).__name__}.{attr}")


THREADS = 4  # callers in the threaded .delay() reference row


class TaskqSystem:
    """``noop.delay()`` for enqueue, ``noop.map()`` for the pre-load, ``noop_result.delay().get()``
    for RPC."""

    name = "taskq"
    queue = taskq_app.QUEUE

    def __init__(self) -> None:
        self.notes = [
            (f"taskq {getattr(taskq, '__version__', '?')}: defaults (durable queue with a .dead "
             "dead-letter queue, persistent, publisher confirms, msgpack bodies); "
             "taskq worker -c 2 --loglevel warning (supervisor + 2 children, prefetch 1, ack after run)"),
        ]
        self.reference_enqueues: dict[str, Callable[[int], None]] = {
            "taskq .map()": self._enqueue_map,
            f"taskq .delay() x{THREADS} threads": self._enqueue_threads,
        }
        self._workers: WorkerProcesses | None = None

    def enqueue(self, n: int) -> None:
        delay = taskq_app.noop.delay
        for _ in range(n):
            delay()

    def _enqueue_map(self, n: int) -> None:
        """Reference row: the bulk API pipelines publisher confirms instead of one per message."""
        taskq_app.noop.map(() for _ in range(n))

    def _enqueue_threads(self, n: int) -> None:
        """Reference row: ``.delay()`` from several threads at once, as a threaded web server
        calls it. Each confirm still waits for the broker; the pool gives each thread its
        own connection, so the waits overlap."""
        delay = taskq_app.noop.delay
        counts = [n // THREADS + (1 if i < n % THREADS else 0) for i in range(THREADS)]
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(lambda k: [delay() for _ in range(k)], count) for count in counts]:
                future.result()

    def preload(self, n: int, first_mark: str, last_mark: str) -> None:
        args = [(first_mark,)] + [()] * (n - 2) + [(last_mark,)]
        taskq_app.noop.map(args)

    def start_workers(self, log_path: Path) -> WorkerProcesses:
        cmd = python_command(
            "-m", "taskq", "worker", "-A", "bench.systems.taskq_app:app",
            "-Q", self.queue, "-c", "2", "--broker", BROKER_URL, "--loglevel", "warning",
        )
        self._workers = WorkerProcesses([cmd], log_path)
        return self._workers

    def rpc_roundtrips(self, n: int) -> list[float]:
        delay = taskq_app.noop_result.delay
        return time_calls(lambda: delay().get(timeout=10), n)

    def stop(self) -> None:
        if self._workers is not None:
            self._workers.stop()
            self._workers = None
        # Closing the app lets RabbitMQ auto-delete its exclusive reply queue.
        taskq_app.app.close()
        delete_queues([self.queue, f"{self.queue}.dead"])


def load() -> TaskqSystem:
    _check_api()
    return TaskqSystem()
