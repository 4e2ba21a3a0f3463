"""``taskq.current()``: the running task, as seen from inside it, and its ``progress()``.

Set around the task function's call, on the thread that runs it (a ``ContextVar``, so an
in-process test worker's task thread and a forked child's main thread each see their own).
Progress goes to whoever listens in this process (the state store's middleware, the
lifecycle events), which keeps this module free of any store or broker.
"""

from __future__ import annotations

import math
import threading
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from taskq.errors import OutsideTask
from taskq.message import TaskMessage, pack

log = structlog.get_logger("taskq.worker")


@dataclass(frozen=True)
class TaskContext:
    """The task running on this thread: its id, name, queue and attempt."""

    message: TaskMessage
    queue: str

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def task(self) -> str:
        return self.message.task

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""
        return self.message.attempts + 1

    def progress(self, fraction: float | None = None, **meta: Any) -> None:
        """Say how far the task is (0.0 to 1.0) and what it is doing (``step="resize"``).

        Recorded in the state store, if the app has one, and sent as a ``task.progress``
        event. Best effort: a store that can't be reached is logged, never raised into the
        task, whose own success must not hang on a progress bar (its final state is retried).
        A bad value is the caller's mistake and raises ValueError or EncodeError here.
        """
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or math.isnan(fraction) \
                    or not 0.0 <= fraction <= 1.0:
                raise ValueError(f"progress is a fraction from 0.0 to 1.0, not {fraction!r}")
            fraction = float(fraction)
        pack(meta)  # the store and the events carry it as msgpack: refuse here what they can't
        for listener in _listeners:
            try:
                listener(self, fraction, meta)
            except Exception as exc:
                log.warning("recording progress failed", task_id=self.id, error=f"{type(exc).__name__}: {exc}")


ProgressListener = Callable[[TaskContext, "float | None", "dict[str, Any]"], None]

_current: ContextVar[TaskContext | None] = ContextVar("taskq_current_task", default=None)
_listeners: tuple[ProgressListener, ...] = ()
_listeners_lock = threading.Lock()


def current() -> TaskContext:
    """The task running on this thread; OutsideTask anywhere else."""
    context = _current.get()
    if context is None:
        raise OutsideTask("taskq.current() is only available inside a running task")
    return context


def entering(message: TaskMessage, queue: str) -> Token[TaskContext | None]:
    """Make ``message`` the current task of this thread (the worker, around the function's call)."""
    return _current.set(TaskContext(message, queue))


def leaving(token: Token[TaskContext | None]) -> None:
    _current.reset(token)


def listen(listener: ProgressListener) -> Callable[[], None]:
    """Call ``listener`` at each ``progress()`` in this process; returns the call that stops it."""
    global _listeners
    with _listeners_lock:
        _listeners = (*_listeners, listener)

    def stop() -> None:
        global _listeners
        with _listeners_lock:
            _listeners = tuple(known for known in _listeners if known is not listener)

    return stop
