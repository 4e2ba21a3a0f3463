"""Time limits for the task thread of a worker child.

Soft limit: ``SoftTimeLimitExceeded`` is raised *inside* the task thread with
``PyThreadState_SetAsyncExc``. Signals can't do it (Python runs handlers on the main
thread only, and the main thread here owns the connection), and it lets the task catch
the exception and clean up. CPython delivers it at the next bytecode boundary, so a
task blocked in one long C call (``time.sleep(600)``, a socket read) sees it only when
that call returns: the hard limit is the guarantee, the soft limit a courtesy.

Hard limit: the thread holding the connection while the task runs (a forked child's
watchdog, running.py; an in-process worker's main thread) notices the deadline, settles
the message (failure reply, retry or dead letter) and acks it, then a forked child ends
with ``os._exit``: a thread can't be killed, a process can, and the supervisor starts a
fresh child. If the task thread holds the GIL in a C loop that thread can't run at
all, so a kernel timer (SIGALRM left at its default action, which terminates the
process without needing the GIL) fires a few seconds later as a backstop; the message
was not acked then and is redelivered, and a quorum queue's delivery limit ends it.
"""

from __future__ import annotations

import ctypes
import queue
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from taskq.errors import SoftTimeLimitExceeded

BACKSTOP_GRACE = 5.0  # seconds after the hard limit before the kernel timer kills the child
EXIT_TIME_LIMIT = 3  # the child's exit status after a hard time limit


@dataclass(frozen=True)
class Deadlines:
    """Monotonic instants at which a running task's limits expire (None: no such limit)."""

    soft: float | None = None
    hard: float | None = None

    @classmethod
    def start(cls, soft_limit: float | None, hard_limit: float | None, now: float | None = None) -> Deadlines:
        now = time.monotonic() if now is None else now
        return cls(
            soft=None if soft_limit is None else now + soft_limit,
            hard=None if hard_limit is None else now + hard_limit,
        )

    def wait_time(self, tick: float, soft_fired: bool, now: float | None = None) -> float:
        """How long the main thread may block before it must look at a deadline again."""
        now = time.monotonic() if now is None else now
        pending = [d for d in (None if soft_fired else self.soft, self.hard) if d is not None]
        return max(0.0, min([tick, *(d - now for d in pending)]))


class TaskThreadGuard:
    """Lets the main thread raise an exception in the task thread only while the task's own code runs.

    Raised any later, it could hit taskq's code after the task returned, or the idle
    executor thread. The lock makes "is it still inside the task?" and "raise it" one
    step; on the way out the task thread cancels anything set but not yet delivered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self.fired = False

    def enter(self) -> None:
        with self._lock:
            self._thread_id = threading.get_ident()

    def leave(self) -> None:
        with self._lock:
            thread_id, self._thread_id = self._thread_id, None
            if thread_id is not None and self.fired:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)

    def interrupt(self, exc_type: type[BaseException] = SoftTimeLimitExceeded) -> bool:
        """Raise ``exc_type`` in the task thread if the task is still running; True if sent."""
        with self._lock:
            if self._thread_id is None or self.fired:
                return False
            self.fired = True
            count = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), ctypes.py_object(exc_type))
            return bool(count == 1)


class TaskThreads:
    """Runs tasks one at a time on a long-lived daemon thread and returns a Future: a
    one-thread executor that can abandon a stuck task.

    Why not ThreadPoolExecutor: Python joins its threads at exit, so a task stuck past its
    hard limit in an in-process worker (testing.InlineWorker) would hang the test run
    until it returned. Here an abandoned thread is simply left behind (a daemon) and the
    next task gets a new one. Why not a thread per task: starting a thread costs more
    than a no-op task's whole run (measured: a third of a child's time when draining).
    """

    def __init__(self, name: str = "taskq-task") -> None:
        self._name = name
        self._work: queue.SimpleQueue[Any] | None = None
        self._current: threading.Thread | None = None

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if self._work is None:
            self._work = queue.SimpleQueue()
            self._current = threading.Thread(target=_serve_tasks, args=(self._work,), name=self._name, daemon=True)
            self._current.start()
        self._work.put((future, function, args))
        return future

    def abandon(self) -> None:
        """Forget the thread running a task stuck past its hard limit; it dies with the process.

        The next task starts a new thread; the stuck one finds no more work when (if) it
        returns, because its queue is told to stop.
        """
        if self._work is not None:
            self._work.put(None)
        self._work = None
        self._current = None

    def shutdown(self, wait: bool = True) -> None:
        if self._work is not None:
            self._work.put(None)
        if wait and self._current is not None:
            self._current.join()
        self._work = None
        self._current = None


def _serve_tasks(work: queue.SimpleQueue[Any]) -> None:
    while True:
        item = work.get()
        if item is None:
            return
        future, function, args = item
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # handed to the waiting thread, as an executor does
            future.set_exception(exc)
        del item, future, function, args  # don't keep the last task's objects alive while idle


def arm_backstop(hard_limit: float | None) -> None:
    """Have the kernel end this process ``BACKSTOP_GRACE`` s after the hard limit (see module doc)."""
    if hard_limit is None:
        return
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, hard_limit + BACKSTOP_GRACE)


def disarm_backstop() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
