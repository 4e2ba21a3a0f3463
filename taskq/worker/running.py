"""Running one task under its time limits while the connection stays served.

In a forked child the task runs on the main thread, which lends the connection to a
watchdog thread for the task's duration (watchdog.py). In an in-process worker
(testing.InlineWorker) the task runs on a second thread and the main thread keeps the
connection alive itself (``_wait_for_outcome``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from kombu import Connection

from taskq.middleware.delivery import Delivery, Outcome
from taskq.worker import limits
from taskq.worker.execution import run_task
from taskq.worker.watchdog import Watch, Watchdog

TICK = 1.0  # seconds between looks at the deadlines while an in-process task runs
#: The deadlines of a task without time limits (most tasks): shared, since building a frozen
#: Deadlines per task cost ~0.7 µs of a no-op task's time.
NO_DEADLINES = limits.Deadlines()


class TaskRunner:
    """Runs a delivery's task; returns its Outcome, or None past its hard time limit (in-process)."""

    def __init__(self, keep_alive: Callable[[Connection], None], connection_errors: tuple[type[BaseException], ...],
                 watchdog: Watchdog | None) -> None:
        self.keep_alive = keep_alive
        self.connection_errors = connection_errors
        self.watchdog = watchdog
        self.executor = limits.TaskThreads()

    def run(self, connection: Connection, delivery: Delivery, on_hard_limit: Callable[[], None]) -> Outcome | None:
        assert delivery.task is not None and delivery.envelope is not None
        guard = limits.TaskThreadGuard()
        if delivery.soft_time_limit is None and delivery.time_limit is None:
            deadlines = NO_DEADLINES
        else:
            deadlines = limits.Deadlines.start(delivery.soft_time_limit, delivery.time_limit)
        if self.watchdog is not None:
            return self._run_here(connection, delivery, guard, deadlines, on_hard_limit)
        future = self.executor.submit(run_task, delivery.task, delivery.envelope, delivery.queue, guard,
                                      delivery.reply_wanted)
        return self._wait_for_outcome(connection, future, guard, deadlines)

    def _run_here(self, connection: Connection, delivery: Delivery, guard: limits.TaskThreadGuard,
                  deadlines: limits.Deadlines, on_hard_limit: Callable[[], None]) -> Outcome:
        """Forked child: run the task on this thread while the watchdog holds the connection."""
        assert self.watchdog is not None and delivery.task is not None and delivery.envelope is not None

        def hard_limit(lost: BaseException | None) -> None:  # on the watchdog thread; ends the process
            if lost is not None:  # nothing to settle: the broker requeued the message
                os._exit(limits.EXIT_TIME_LIMIT)
            on_hard_limit()

        limits.arm_backstop(delivery.time_limit)
        self.watchdog.lend(Watch(connection, deadlines, guard, hard_limit))
        try:
            return run_task(delivery.task, delivery.envelope, delivery.queue, guard, delivery.reply_wanted)
        finally:
            self.watchdog.take_back()  # raises if the connection broke meanwhile
            if delivery.time_limit is not None:
                limits.disarm_backstop()

    def _wait_for_outcome(self, connection: Connection, future: Future[Outcome], guard: limits.TaskThreadGuard,
                          deadlines: limits.Deadlines) -> Outcome | None:
        """In-process worker (no watchdog): serve the connection until the task, on the task
        thread, ends; None if it ran past its hard time limit.

        If the connection breaks meanwhile, the task is still waited for (never two at
        once in one child, and its limits still hold), then the error is raised: the
        broker has requeued the message, so its outcome can't be settled here.
        """
        lost: BaseException | None = None
        soft_sent = False
        while True:
            now = time.monotonic()
            if deadlines.soft is not None and now >= deadlines.soft and not soft_sent:
                soft_sent = True  # once: if the task just returned, there is nothing to interrupt
                guard.interrupt()
            if deadlines.hard is not None and now >= deadlines.hard:
                if lost is not None:  # nothing to settle: the broker requeued the message
                    raise lost
                return None
            try:
                outcome: Outcome = future.result(timeout=deadlines.wait_time(TICK, soft_sent))
                break
            except FutureTimeout:
                if lost is None:
                    try:
                        self.keep_alive(connection)
                    except self.connection_errors as exc:
                        lost = exc
        if lost is not None:
            raise lost
        return outcome
