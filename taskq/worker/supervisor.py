"""The supervisor: starts N children, replaces the ones that die, and stops them on a signal.

It never connects to the broker itself: a crash-looping child can't take the supervisor
down, and the children are forked from a process that holds no sockets or threads (but,
with ``--metrics-port``, the metrics server's: its thread only reads the metrics files, and
each child closes its copy of the socket).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from taskq import settings
from taskq.app import App
from taskq.worker.child import EXIT_BROKER_UNUSABLE, child_main
from taskq.worker.limits import EXIT_TIME_LIMIT
from taskq.worker.parent_death import die_with_parent

if TYPE_CHECKING:
    from taskq.worker.metrics_export import MetricsExport

log = structlog.get_logger("taskq.worker")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass(frozen=True)
class WorkerOptions:
    queues: list[str]
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    scheduler: bool = False  # also run one scheduler process (taskq/scheduler.py) beside the children


@dataclass
class ChildProcess:
    process: Any  # multiprocessing.Process
    started_at: float
    scheduler: bool = False  # the --scheduler process, not a worker child


class Supervisor:
    """Keeps ``concurrency`` children alive until a signal says stop."""

    def __init__(self, app: App, options: WorkerOptions, metrics: MetricsExport | None = None) -> None:
        # A queue name the app can't declare would fail in every child, and every
        # replacement: refuse it here, once, with the reason (ConfigurationError).
        for name in options.queues:
            app.queue(name)
        self.app = app
        self.options = options
        self.metrics = metrics  # serving every child's metrics: told when one is reaped
        self.children: dict[int, ChildProcess] = {}
        self.signals_received = 0
        self.broker_unusable = False  # a child found the broker unusable: stop, exit 1
        self._context = multiprocessing.get_context("fork")

    def run(self) -> int:
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_write, False)
        previous_wakeup = signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for _ in range(self.options.concurrency):
                if self.signals_received:
                    break  # told to stop while still starting: don't start more
                self._start_child()
            if self.options.scheduler and not self.signals_received:
                self._start_child(scheduler=True)
            while self.children:
                sentinels = {child.process.sentinel: pid for pid, child in self.children.items()}
                ready = multiprocessing.connection.wait([*sentinels, wakeup_read], timeout=5.0)
                if wakeup_read in ready:
                    os.read(wakeup_read, 512)
                for sentinel in ready:
                    if sentinel in sentinels:
                        self._reap(sentinels[sentinel])
                if self.signals_received >= 2:
                    self._kill_children()
                    return 1
            return 1 if self.broker_unusable else 0
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wakeup_read)
            os.close(wakeup_write)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals_received += 1
        if self.signals_received == 1:
            log.info("stopping: finishing running tasks (signal again to exit at once)", signal=signal.Signals(signum).name)
            for child in self.children.values():
                self._signal_child(child, signal.SIGTERM)

    def _start_child(self, scheduler: bool = False) -> None:
        # Always from the main thread: a child dies with the thread that forked it
        # (PR_SET_PDEATHSIG, parent_death.py), which must live as long as the supervisor.
        target, name = (self._scheduler_main, "taskq-scheduler") if scheduler else (self._child_main, "taskq-child")
        process = self._context.Process(target=target, args=(os.getpid(),), name=name, daemon=False)
        # Fork with SIGTERM/SIGINT blocked: a signal arriving before the child installed
        # its own handlers would otherwise run the supervisor's handler in the child.
        # The child unblocks them once its handlers are in place (child_main).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        assert process.pid is not None  # started: it has one
        self.children[process.pid] = ChildProcess(process, time.monotonic(), scheduler)
        log.debug("child started", child_pid=process.pid)

    def _child_main(self, supervisor_pid: int) -> None:
        """In the forked child: let go of what is the supervisor's, then be a worker child."""
        if self.metrics is not None:
            self.metrics.forget_in_child()
        child_main(self.app, self.options.queues, supervisor_pid)

    def _scheduler_main(self, supervisor_pid: int) -> None:
        """In the forked scheduler process: one more candidate for the app's scheduler lease
        (docs/periodic.md), which dies with the supervisor like a child and stops on SIGTERM."""
        from taskq.scheduler import Scheduler

        die_with_parent(supervisor_pid)
        self.app.forget_connections_after_fork()
        stop = threading.Event()
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda *_: stop.set())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        Scheduler(self.app, should_stop=stop).run()
        os._exit(0)

    def _reap(self, pid: int) -> None:
        child = self.children.pop(pid)
        child.process.join()
        if self.metrics is not None:
            self.metrics.child_exited(pid)
        exitcode = child.process.exitcode
        if self.signals_received or self.broker_unusable:
            log.debug("child stopped", child_pid=pid, exitcode=exitcode)
            return
        if exitcode == EXIT_BROKER_UNUSABLE:
            log.error("stopping the worker: the broker refused a child or is unusable (the child said why), as it would every new child",
                      child_pid=pid, broker=self.app.broker.masked_url)
            self.broker_unusable = True
            for other in self.children.values():
                self._signal_child(other, signal.SIGTERM)
            return
        if exitcode == EXIT_TIME_LIMIT:
            log.info("child ended a task past its hard time limit, starting another", child_pid=pid)
        else:
            log.warning("child died, starting another", child_pid=pid, exitcode=exitcode)
        if time.monotonic() - child.started_at < settings.WORKER_RESTART_PAUSE:
            time.sleep(settings.WORKER_RESTART_PAUSE)  # don't fork-bomb on a child that dies at start
        self._start_child(scheduler=child.scheduler)

    def _kill_children(self) -> None:
        for child in self.children.values():
            self._signal_child(child, signal.SIGKILL)
        for child in self.children.values():
            child.process.join()
        self.children.clear()

    @staticmethod
    def _signal_child(child: ChildProcess, signum: int) -> None:
        try:
            os.kill(child.process.pid, signum)
        except ProcessLookupError:
            pass
