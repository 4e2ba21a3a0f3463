"""The ordered middleware of a worker child, called hook by hook, each failure contained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import structlog

from taskq.middleware.base import HOOKS, Middleware
from taskq.middleware.decisions import Decision

if TYPE_CHECKING:
    from kombu import Connection

    from taskq.message import TaskMessage
    from taskq.middleware.base import WorkerInfo
    from taskq.middleware.delivery import Delivery

log = structlog.get_logger("taskq.worker")

#: The hooks whose answer is a decision (the first one wins); the others only notify.
DECISION_HOOKS = ("before_run", "decide_failure", "before_settle")


def nothing(*args: Any) -> None:
    """What the pipeline calls for a hook no middleware uses: one shared, empty function."""


def no_decision(*args: Any) -> None:
    """What the pipeline asks for a decision hook no middleware uses: no opinion."""


class Pipeline:
    """Per hook, one callable built once: ``pipeline.on_task_start(delivery)`` calls the
    ``on_task_start`` of only the middleware that override it, in order.

    Built once because the worker calls about six hooks per task: a hook nobody uses is the
    shared ``nothing``, a hook one middleware uses calls it inside one ``try``, and no hook is
    looked up by name per task (docs/benchmarks.md, "the middleware pipeline").
    """

    before_publish: Callable[[TaskMessage, dict[str, Any]], None]
    on_worker_start: Callable[[WorkerInfo], None]
    on_worker_stop: Callable[[], None]
    on_connect: Callable[[Connection], None]
    on_disconnect: Callable[[], None]
    on_tick: Callable[[], None]
    on_received: Callable[[Delivery], None]
    before_run: Callable[[Delivery], Decision | None]
    on_task_start: Callable[[Delivery], None]
    on_task_succeeded: Callable[[Delivery], None]
    on_task_failed: Callable[[Delivery], None]
    decide_failure: Callable[[Delivery], Decision | None]
    before_settle: Callable[[Delivery, Decision], Decision | None]
    on_settled: Callable[[Delivery, Decision], None]

    def __init__(self, middleware: Iterable[Middleware]) -> None:
        self.middleware = list(middleware)
        used = [(m, m.used_hooks()) for m in self.middleware]
        #: Per hook, the bound methods of the middleware that override it, in order.
        self.methods: dict[str, tuple[Callable[..., Any], ...]] = {
            hook: tuple(getattr(m, hook) for m, hooks in used if hook in hooks) for hook in HOOKS
        }
        for hook, methods in self.methods.items():
            setattr(self, hook, decider(hook, methods) if hook in DECISION_HOOKS else notifier(hook, methods))

    def notify(self, hook: str, *args: Any) -> None:
        """Call each middleware's ``hook`` (by name); one that raises is logged and the others still run."""
        getattr(self, hook)(*args)

    def decide(self, hook: str, *args: Any) -> Decision | None:
        """The first decision a middleware's ``hook`` (by name) returns, or None; one that raises is skipped."""
        decision: Decision | None = getattr(self, hook)(*args)
        return decision

    def wants(self, hook: str) -> bool:
        return bool(self.methods[hook])


def notifier(hook: str, methods: tuple[Callable[..., Any], ...]) -> Callable[..., None]:
    """One callable that calls each of ``methods``, containing a failure of each."""
    if not methods:
        return nothing
    if len(methods) == 1:
        (method,) = methods

        def notify_one(*args: Any) -> None:  # the usual case: no loop to set up per call
            try:
                method(*args)
            except Exception as exc:
                failed(method, hook, exc)

        return notify_one

    def notify_each(*args: Any) -> None:
        call_each(methods, hook, *args)

    return notify_each


def decider(hook: str, methods: tuple[Callable[..., Any], ...]) -> Callable[..., Decision | None]:
    """One callable that returns the first decision of ``methods``, skipping one that raises."""
    if not methods:
        return no_decision

    def decide(*args: Any) -> Decision | None:
        for method in methods:
            try:
                decision: Decision | None = method(*args)
            except Exception as exc:
                failed(method, hook, exc)
                continue
            if decision is not None:
                return decision
        return None

    return decide


def call_each(functions: Iterable[Callable[..., Any]], hook: str, *args: Any) -> None:
    """Call each function; one that raises is logged and the next still runs."""
    for function in functions:
        try:
            function(*args)
        except Exception as exc:
            failed(function, hook, exc)


def failed(method: Callable[..., Any], hook: str, exc: Exception) -> None:
    bound_to = getattr(method, "__self__", None)
    owner = type(bound_to).__name__ if bound_to is not None else getattr(method, "__qualname__", repr(method))
    log.error("middleware hook failed", middleware=owner, hook=hook, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
