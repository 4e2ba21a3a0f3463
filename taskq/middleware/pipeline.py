"""The ordered middleware of a worker child, called hook by hook, each failure contained."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import structlog

from taskq.middleware.base import HOOKS, Middleware
from taskq.middleware.decisions import Decision

log = structlog.get_logger("taskq.worker")


class Pipeline:
    """Per hook, the bound methods of only the middleware that override it, built once.

    A deployment that uses no hook pays an empty loop for it, not a call per middleware.
    """

    def __init__(self, middleware: Iterable[Middleware]) -> None:
        self.middleware = list(middleware)
        used = [(m, m.used_hooks()) for m in self.middleware]
        self._hooks: dict[str, list[Callable[..., Any]]] = {
            hook: [getattr(m, hook) for m, hooks in used if hook in hooks] for hook in HOOKS
        }

    def notify(self, hook: str, *args: Any) -> None:
        """Call each middleware's ``hook``; one that raises is logged and the others still run."""
        call_each(self._hooks[hook], hook, *args)

    def decide(self, hook: str, *args: Any) -> Decision | None:
        """The first decision a middleware's ``hook`` returns, or None; one that raises is skipped."""
        for method in self._hooks[hook]:
            try:
                decision: Decision | None = method(*args)
            except Exception as exc:
                failed(method, hook, exc)
                continue
            if decision is not None:
                return decision
        return None

    def wants(self, hook: str) -> bool:
        return bool(self._hooks[hook])


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
