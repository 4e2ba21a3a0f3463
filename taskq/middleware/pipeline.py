"""The middleware protocol, a no-op base class whose hooks are named for when they run, and the
pipeline that calls them.

A middleware overrides only the hooks it needs; the worker calls, per hook, only the
middleware that override it (``Pipeline``), so a hook nobody uses costs nothing per task.
Notification hooks (``on_*``) return nothing. Decision hooks (``before_run``,
``decide_failure``, ``before_settle``) return a decision (taskq/middleware/delivery.py) or None ("no opinion"):
middleware never publish or ack, the worker's settler does, so the delivery guarantees
hold whatever a middleware does. A hook that raises is logged and skipped, never the
worker killed. A middleware also declares the ``@app.task`` options it owns
(``task_options``), so each option is written once (``task_settings``).

``before_run`` and ``decide_failure``: the first decision wins. ``before_settle`` is a
chain instead: every middleware is asked in turn, each seeing the decision as the previous
one left it (the workflows middleware adds the next step's publish to a ``Succeeded``, then
the state store records it, and may still replace it with a dead letter).

Order: ``received -> before_run -> task_start -> (run) -> task_succeeded | task_failed ->
decide_failure (failures only) -> before_settle -> settled``. A success is settled (acked) before
``on_task_succeeded``, so the broker sends the next message meanwhile; a failure is
reported before its retry or dead letter is settled, so ``task.failed`` comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

import structlog

from taskq.errors import ConfigurationError
from taskq.middleware.delivery import Decision

if TYPE_CHECKING:
    from kombu.connection import Connection

    from taskq.message import TaskMessage
    from taskq.middleware.delivery import Delivery

log = structlog.get_logger("taskq.worker")


@dataclass(frozen=True)
class WorkerInfo:
    """What a middleware may want to know about the worker child it runs in."""

    app_name: str
    queue_names: tuple[str, ...]
    broker_delays: bool  #: whether the broker holds delayed messages (eta, retry backoff)
    pid: int


class Middleware:
    """No-op base class: subclass it and override the hooks you need."""

    #: The ``@app.task`` options this middleware owns, with their defaults. ``@app.task``
    #: accepts exactly the options of the app's middleware (and the core ones), so an option
    #: is written once, here, and a typo is an error at import naming the known options.
    task_options: ClassVar[Mapping[str, Any]] = {}

    def check_task_options(self, options: Mapping[str, Any]) -> None:
        """Raise ValueError for a value of one of our ``task_options`` that can't work (at decoration)."""

    def used_hooks(self) -> set[str]:
        """The hooks this middleware does something in: the worker calls no others."""
        return {hook for hook in HOOKS if getattr(type(self), hook) is not getattr(Middleware, hook)}

    # -- producer side (the process calling .delay()) --------------------------------------

    def before_publish(self, message: TaskMessage, headers: dict[str, Any]) -> None:
        """Add to ``headers`` of a task message about to be sent (e.g. a W3C ``traceparent``)."""

    # -- worker lifecycle (in each worker child) -------------------------------------------

    def on_worker_start(self, worker: WorkerInfo) -> None:
        """The child is about to connect for the first time."""

    def on_worker_stop(self) -> None:
        """The child stopped consuming and is about to exit."""

    def on_connect(self, connection: Connection) -> None:
        """Each (re)connection, on the thread that owns it: open channels of your own here."""

    def on_disconnect(self) -> None:
        """A clean stop of the connection (not a lost one), or the child ending after a hard time limit."""

    def on_tick(self) -> None:
        """Often (each loop, and while a task runs) on the connection's thread: time to flush."""

    # -- per message -----------------------------------------------------------------------

    def on_received(self, delivery: Delivery) -> None:
        """A message was decoded and names a known task; nothing was decided yet."""

    def before_run(self, delivery: Delivery) -> Decision | None:
        """Return a decision to settle the message without running it; the first one wins."""
        return None

    def on_task_start(self, delivery: Delivery) -> None:
        """The task is about to run."""

    def on_task_succeeded(self, delivery: Delivery) -> None:
        """It returned (``delivery.outcome``); already acked."""

    def on_task_failed(self, delivery: Delivery) -> None:
        """It raised or hit its hard time limit (``delivery.outcome``); not settled yet."""

    def decide_failure(self, delivery: Delivery) -> Decision | None:
        """After a failure: retry, dead-letter, ...; the first decision wins (default: dead letter)."""
        return None

    def before_settle(self, delivery: Delivery, decision: Decision) -> Decision | None:
        """The last word before the settler publishes and acks: return a decision to replace
        ``decision`` (the state store dead-letters a message whose state it could not record).
        Every middleware is asked, in order, each seeing the decision as the previous one left it."""
        return None

    def on_settled(self, delivery: Delivery, decision: Decision) -> None:
        """The message was settled as ``decision`` (published and acked)."""


HOOKS = (
    "before_publish", "on_worker_start", "on_worker_stop", "on_connect", "on_disconnect", "on_tick",
    "on_received", "before_run", "on_task_start", "on_task_succeeded", "on_task_failed", "decide_failure",
    "before_settle", "on_settled",
)


def task_settings(middleware: Iterable[Middleware], core_options: Iterable[str], label: str,
                  given: Mapping[str, Any]) -> dict[str, Any]:
    """The middleware-owned options of task ``label``, defaults filled in, each checked by its owner.

    An option no middleware owns is refused naming the known ones: a misspelt ``max_retry``
    must fail at import, not silently never retry.
    """
    middleware = list(middleware)
    settings: dict[str, Any] = {}
    for owner in middleware:
        settings.update(owner.task_options)
    unknown = sorted(set(given) - set(settings))
    if unknown:
        known = ", ".join(sorted({*core_options, *settings}))
        raise ConfigurationError(f"task {label}: unknown option {', '.join(unknown)}; the options are {known}")
    settings.update(given)
    for owner in middleware:
        try:
            owner.check_task_options(settings)
        except ValueError as exc:
            raise ConfigurationError(f"task {label}: {exc}") from None
    return settings


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
            if hook == "before_settle":
                setattr(self, hook, settle_chain(methods))
            else:
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


def settle_chain(methods: tuple[Callable[..., Any], ...]) -> Callable[..., Decision | None]:
    """``before_settle``: ask each of ``methods`` in turn, each seeing the decision the previous
    left (None from one means "keep it"); returns the last replacement, or None if none replaced it."""
    if not methods:
        return no_decision

    def settle(delivery: Delivery, decision: Decision) -> Decision | None:
        replaced: Decision | None = None
        for method in methods:
            try:
                answer: Decision | None = method(delivery, replaced or decision)
            except Exception as exc:
                failed(method, "before_settle", exc)
                continue
            if answer is not None:
                replaced = answer
        return replaced

    return settle


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
