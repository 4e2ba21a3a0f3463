"""The App's decorator hooks (``@app.on_task_start`` ...) for application code, as one middleware.

Named decorators rather than Huey-style ``@app.signal(SIGNAL_X)``: a misspelt hook is an
AttributeError at import instead of a constant nobody sends, and each decorator's docstring
says what its function receives. The App creates this middleware at the first decorator,
and the worker calls only the hooks that have functions, so unused ones cost nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Retry
from taskq.middleware.pipeline import Middleware, WorkerInfo, call_each

#: The App's decorator names -> the middleware hook that calls their functions.
APP_HOOKS = {
    "on_task_start": "on_task_start",
    "on_task_success": "on_task_succeeded",
    "on_task_failure": "on_task_failed",
    "on_task_retry": "on_settled",
    "on_dead_letter": "on_settled",
    "on_worker_start": "on_worker_start",
    "on_worker_stop": "on_worker_stop",
}


class AppHooks(Middleware):
    """Calls the application's functions registered with the App's ``on_*`` decorators."""

    def __init__(self) -> None:
        self.functions: dict[str, list[Callable[..., Any]]] = {name: [] for name in APP_HOOKS}

    def add(self, name: str, function: Callable[..., Any]) -> None:
        self.functions[name].append(function)

    def used_hooks(self) -> set[str]:
        return {APP_HOOKS[name] for name, functions in self.functions.items() if functions}

    def _call(self, name: str, *args: Any) -> None:
        call_each(self.functions[name], name, *args)

    def on_worker_start(self, worker: WorkerInfo) -> None:
        self._call("on_worker_start", worker)

    def on_worker_stop(self) -> None:
        self._call("on_worker_stop")

    def on_task_start(self, delivery: Delivery) -> None:
        self._call("on_task_start", delivery)

    def on_task_succeeded(self, delivery: Delivery) -> None:
        self._call("on_task_success", delivery)

    def on_task_failed(self, delivery: Delivery) -> None:
        self._call("on_task_failure", delivery)

    def on_settled(self, delivery: Delivery, decision: Decision) -> None:
        if isinstance(decision, Retry):
            self._call("on_task_retry", delivery, decision)
        elif isinstance(decision, DeadLetter):
            self._call("on_dead_letter", delivery, decision)
