"""The watchdog of a forked worker child: while the main thread runs a task, it keeps the
connection alive and enforces the task's time limits.

Why the task runs on the main thread at all: handing each task to another thread and
back cost a no-op task about a third of its time (two wake-ups, a Future, its locks).
But the main thread owns the connection, and a task can run for an hour; the broker
must still get heartbeats and the time limits must still fire. So the main thread lends
the connection out while it runs task code: it holds ``connection_lock`` at all other
times and releases it only for the task's duration (``lend``, ``take_back``). The watchdog thread
wakes every ``period`` seconds (and at each deadline); when it finds the *same* task
still running as at its previous wake, it takes the lock and reads and writes the
socket for a moment. A task shorter than ``period`` never meets it, so the fast path
costs one lock release and acquire.

Soft limit: ``SoftTimeLimitExceeded`` is raised in the main thread through the task's
``TaskThreadGuard`` (see limits.py). Hard limit: the watchdog takes the connection,
calls ``on_hard_limit`` (which settles the message and ends the process) — the task
itself can't be stopped, the process can. If the task holds the GIL in C, none of this
runs; limits.arm_backstop's kernel timer is the backstop, as before.

Only forked children use this: an in-process worker (testing.InlineWorker) can't end
its process at a hard limit, so it keeps running tasks on a thread it can abandon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskq.worker.limits import Deadlines, TaskThreadGuard


@dataclass(eq=False)
class Watch:
    """The task the main thread is running, as the watchdog needs to see it."""

    connection: Any  # kombu.Connection
    deadlines: Deadlines
    guard: TaskThreadGuard
    # Called on the watchdog thread, with the connection lock held, once the hard limit
    # has passed; given the connection error if the connection broke during the task.
    # In a forked child it does not return.
    on_hard_limit: Callable[[BaseException | None], None]
    soft_sent: bool = False  # set by the watchdog: the soft limit is raised once at most


class Watchdog:
    def __init__(self, keep_alive: Callable[[Any], None], period: float) -> None:
        self.connection_lock = threading.Lock()
        self.connection_lock.acquire()  # the main thread's, except while a task runs
        self._keep_alive = keep_alive
        self._period = period
        self._wake = threading.Condition()
        self._watch: Watch | None = None
        self._lost: BaseException | None = None
        self._thread: threading.Thread | None = None

    def lend(self, watch: Watch) -> None:
        """Main thread, just before it runs the task: the connection is the watchdog's now."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="taskq-watchdog", daemon=True)
            self._thread.start()
        self._lost = None
        self._watch = watch
        if watch.deadlines.soft is not None or watch.deadlines.hard is not None:
            with self._wake:
                self._wake.notify()  # the watchdog may be asleep past this task's deadline
        self.connection_lock.release()

    def take_back(self) -> None:
        """Main thread, once the task returned: the connection is ours again.

        If it broke meanwhile, the error is raised now (the broker requeued the task's
        message, so its outcome can't be settled).
        """
        self.connection_lock.acquire()
        self._watch = None
        if self._lost is not None:
            lost, self._lost = self._lost, None
            raise lost

    # -- the watchdog thread --------------------------------------------------------------

    def _serve(self) -> None:
        seen: Watch | None = None
        while True:
            with self._wake:
                self._wake.wait(self._sleep_time())
            watch = self._watch
            if watch is None:
                seen = None
                continue
            now = time.monotonic()
            if watch.deadlines.hard is not None and now >= watch.deadlines.hard:
                with self.connection_lock:
                    if self._watch is watch:  # else the task returned just now: nothing to do
                        watch.on_hard_limit(self._lost)
                continue
            if watch.deadlines.soft is not None and now >= watch.deadlines.soft and not watch.soft_sent:
                watch.soft_sent = True  # if the task already returned, there is nothing to interrupt
                watch.guard.interrupt()
            if watch is seen and self._lost is None:
                self._service(watch)
            seen = watch

    def _service(self, watch: Watch) -> None:
        # Never wait for the lock: if the main thread has it, the task is over.
        if not self.connection_lock.acquire(blocking=False):
            return
        try:
            if self._watch is watch:
                self._keep_alive(watch.connection)
        except Exception as exc:  # noqa: BLE001 - never let the watchdog thread die silently
            # A broken connection, or anything else the connection raised: the main thread
            # raises it once the task returns (the child then reconnects, or is replaced).
            self._lost = exc
        finally:
            self.connection_lock.release()

    def _sleep_time(self) -> float:
        watch = self._watch
        return self._period if watch is None else watch.deadlines.wait_time(self._period, watch.soft_sent)
