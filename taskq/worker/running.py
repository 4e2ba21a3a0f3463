"""Running one task while the connection stays served: calling its function, on which thread,
and waiting for it under its time limits.

In a forked child the task runs on the main thread, which lends the connection to a
``Watchdog`` thread for the task's duration. In an in-process worker (testing.InlineWorker)
the task runs on a second thread it can abandon, and the main thread keeps the connection
alive itself (``TaskRunner._wait_for_outcome``): it can't end its process at a hard limit,
nor arm the SIGALRM backstop from a non-main thread. Either way ``run_task`` calls the
function and turns what happened into an Outcome, with no broker in sight. The time-limit
primitives (deadlines, the soft-limit interrupt, the backstop) are in limits.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import structlog
from kombu.connection import Connection

from taskq import context
from taskq.errors import EncodeError
from taskq.message import Reply, TaskMessage
from taskq.middleware.delivery import Delivery, Outcome, failure
from taskq.task import Task
from taskq.worker import async_running, limits

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
        return self._wait_for_outcome(connection, future, guard, deadlines, delivery)

    def _run_here(self, connection: Connection, delivery: Delivery, guard: limits.TaskThreadGuard,
                  deadlines: limits.Deadlines, on_hard_limit: Callable[[], None]) -> Outcome:
        """Forked child: run the task on this thread while the watchdog holds the connection."""
        assert self.watchdog is not None and delivery.task is not None and delivery.envelope is not None

        def hard_limit(lost: BaseException | None) -> None:  # on the watchdog thread; ends the process
            if lost is not None:  # nothing to settle: the broker requeued the message
                os._exit(limits.EXIT_TIME_LIMIT)
            on_hard_limit()

        limits.arm_backstop(delivery.time_limit)
        self.watchdog.lend(Watch(connection, deadlines, guard, hard_limit, delivery))
        try:
            return run_task(delivery.task, delivery.envelope, delivery.queue, guard, delivery.reply_wanted)
        finally:
            self.watchdog.take_back()  # raises if the connection broke meanwhile
            if delivery.time_limit is not None:
                limits.disarm_backstop()

    def _wait_for_outcome(self, connection: Connection, future: Future[Outcome], guard: limits.TaskThreadGuard,
                          deadlines: limits.Deadlines, delivery: Delivery) -> Outcome | None:
        """In-process worker (no watchdog): serve the connection until the task, on the task
        thread, ends; None if it ran past its hard time limit or a middleware set ``abandon``.

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
                if delivery.abandon is not None and lost is None:
                    return None
        if lost is not None:
            raise lost
        return outcome


# -- the call itself -------------------------------------------------------------------------


def run_task(task: Task[..., Any], message: TaskMessage, queue: str, guard: limits.TaskThreadGuard | None = None,
             encode_reply: bool = True) -> Outcome:
    """Call the task's function with the message's arguments, catching everything it raises.

    structlog context is bound here so the task's own log lines carry the task name, id,
    queue, pid and attempt. ``encode_reply=False`` when no reply will be sent (no
    ``reply_to``, or ``ignore_result``): a successful result nobody receives isn't encoded.
    """
    structlog.contextvars.bind_contextvars(
        task=message.task, task_id=message.id, queue=queue, pid=os.getpid(), attempt=message.attempts + 1
    )
    started = time.monotonic()
    raised: BaseException | None = None
    try:
        try:
            if guard is not None:
                guard.enter()
            current = context.entering(message, queue)  # taskq.current() inside the task
            try:
                result = async_running.call(task.function, message.args, message.kwargs)
            finally:
                context.leaving(current)
                if guard is not None:
                    guard.leave()  # a soft time limit can't be raised in this thread past here
            reply = Reply(task_id=message.id, ok=True, result=result)
        except Exception as exc:
            raised = exc
            reply = failure(message.id, exc)
        try:
            body = reply.body() if encode_reply or not reply.ok else b""
        except EncodeError as exc:
            raised = exc
            reply = failure(message.id, exc)
            body = reply.body()
        return Outcome(reply=reply, body=body, runtime=time.monotonic() - started, exception=raised)
    finally:
        structlog.contextvars.clear_contextvars()


# -- a forked child's watchdog ----------------------------------------------------------------


@dataclass(eq=False)
class Watch:
    """The task the main thread is running, as the watchdog needs to see it."""

    connection: Any  # kombu.Connection
    deadlines: limits.Deadlines
    guard: limits.TaskThreadGuard
    # Called on the watchdog thread, with the connection lock held, once the hard limit
    # has passed; given the connection error if the connection broke during the task.
    # In a forked child it does not return.
    on_hard_limit: Callable[[BaseException | None], None]
    delivery: Delivery | None = None  # its ``abandon``, once set while it runs, ends it as the hard limit does
    soft_sent: bool = False  # set by the watchdog: the soft limit is raised once at most


class Watchdog:
    """A forked child's watchdog thread: while the main thread runs a task, it keeps the
    connection alive and enforces the task's time limits.

    Why the task runs on the main thread at all: handing each task to another thread and
    back cost a no-op task about a third of its time (two wake-ups, a Future, its locks).
    But the main thread owns the connection, and a task can run for an hour; the broker
    must still get heartbeats and the time limits must still fire. So the main thread lends
    the connection out while it runs task code: it holds ``connection_lock`` at all other
    times and releases it only for the task's duration (``lend``, ``take_back``). The watchdog
    thread wakes every ``period`` seconds (and at each deadline); when it finds the *same*
    task still running as at its previous wake, it takes the lock and reads and writes the
    socket for a moment. A task shorter than ``period`` never meets it, so the fast path
    costs one lock release and acquire.

    Soft limit: ``SoftTimeLimitExceeded`` is raised in the main thread through the task's
    ``TaskThreadGuard`` (limits.py). Hard limit: the watchdog takes the connection, calls
    ``on_hard_limit`` (which settles the message and ends the process): the task itself
    can't be stopped, the process can. If the task holds the GIL in C, none of this runs;
    ``limits.arm_backstop``'s kernel timer is the backstop.
    """

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
                self._service(watch)  # may read a revocation that sets the delivery's ``abandon``
                if watch.delivery is not None and watch.delivery.abandon is not None:
                    with self.connection_lock:
                        if self._watch is watch:
                            watch.on_hard_limit(self._lost)
                    continue
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
