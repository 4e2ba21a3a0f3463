"""Start and stop ``taskq worker`` processes for the examples, so each runs with one command."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from taskq import App


@contextlib.contextmanager
def running_workers(app: App, app_path: str, *, count: int = 1, concurrency: int = 1,
                    queues: list[str] | None = None, loglevel: str = "warning") -> Iterator[list[subprocess.Popen]]:
    """``count`` separate worker processes for the block; stopped gracefully (SIGTERM) after it.

    Returns once the broker sees every worker's consumers, so work sent in the block is
    shared among all of them from the first task.
    """
    queues = queues or app.queue_names
    command = [sys.executable, "-m", "taskq", "worker", "-A", app_path, "-c", str(concurrency),
               "-Q", ",".join(queues), "--loglevel", loglevel, "--broker", app.broker.url]
    workers = [subprocess.Popen(command) for _ in range(count)]
    try:
        wait_for_consumers(app, queues[0], count * concurrency, workers)
        yield workers
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)


def wait_for_consumers(app: App, queue: str, expected: int, workers: list[subprocess.Popen],
                       timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with app.broker.connect() as connection:
        while True:
            if any(worker.poll() is not None for worker in workers):
                raise RuntimeError("a worker exited while starting")
            channel = connection.channel()
            try:
                _, _, consumers = channel.queue_declare(queue=queue, passive=True)
            except Exception:  # not declared yet: the workers declare it when they start
                consumers = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
            if consumers >= expected:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{expected} consumers on {queue!r} did not appear in {timeout} s")
            time.sleep(0.05)


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "a condition",
             interval: float = 0.05) -> object:
    """Poll ``condition`` until it returns something truthy (and return that); RuntimeError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def delete_queues(app: App, names: list[str]) -> None:
    """Delete an example's queues (and their ``.dead`` queues), so a rerun starts empty."""
    with app.broker.connect() as connection:
        for name in names:
            for queue in (name, name + ".dead"):
                channel = connection.channel()
                try:
                    channel.queue_delete(queue)
                except Exception:  # never declared: nothing to delete
                    pass
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
