"""The middleware protocol: a no-op base class whose hooks are named for when they run.

A middleware overrides only the hooks it needs; the worker calls, per hook, only the
middleware that override it (``Pipeline``), so a hook nobody uses costs nothing per task.
Notification hooks (``on_*``) return nothing. Decision hooks (``before_run``,
``decide_failure``, ``before_settle``) return a ``taskq.middleware.decisions`` value or None ("no opinion"):
middleware never publish or ack, the worker's settler does, so the delivery guarantees
hold whatever a middleware does. A hook that raises is logged and skipped, never the
worker killed.

Order: ``received -> before_run -> task_start -> (run) -> task_succeeded | task_failed ->
decide_failure (failures only) -> before_settle -> settled``. A success is settled (acked) before
``on_task_succeeded``, so the broker sends the next message meanwhile; a failure is
reported before its retry or dead letter is settled, so ``task.failed`` comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from kombu import Connection

    from taskq.message import TaskMessage
    from taskq.middleware.decisions import Decision
    from taskq.middleware.delivery import Delivery


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
        ``decision`` (the state store dead-letters a message whose state it could not record)."""
        return None

    def on_settled(self, delivery: Delivery, decision: Decision) -> None:
        """The message was settled as ``decision`` (published and acked)."""


HOOKS = (
    "before_publish", "on_worker_start", "on_worker_stop", "on_connect", "on_disconnect", "on_tick",
    "on_received", "before_run", "on_task_start", "on_task_succeeded", "on_task_failed", "decide_failure",
    "before_settle", "on_settled",
)
