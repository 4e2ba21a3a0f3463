"""What a worker child needs from the App, taken once before it starts: the worker never calls
up into the App (for topology, tasks or middleware) while it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from taskq.broker import Broker
from taskq.middleware.pipeline import Middleware

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.task import Task


@dataclass(frozen=True)
class WorkerSetup:
    """The broker, the queues to consume (each with its dead-letter queue), the tasks and the middleware."""

    app_name: str
    broker: Broker
    heartbeat: float
    queue_type: str
    broker_delays: bool
    tasks: Mapping[str, Task[..., Any]]
    queues: tuple[tuple[str, Any, Any], ...]  #: (name, kombu Queue, its ``<name>.dead`` Queue)
    middleware: tuple[Middleware, ...]

    @classmethod
    def from_app(cls, app: App, queue_names: Iterable[str], extra_middleware: Iterable[Middleware] = ()) -> WorkerSetup:
        """``extra_middleware`` go first: the worker child's own (lifecycle events) see every message."""
        return cls(
            app_name=app.name,
            broker=app.broker,
            heartbeat=app.heartbeat,
            queue_type=app.queue_type,
            broker_delays=app.broker_delays,
            tasks=app.tasks,
            queues=tuple((name, app.queue(name), app.dead_letter_queue(name)) for name in queue_names),
            middleware=(*extra_middleware, *app.middleware),
        )

    @property
    def queue_names(self) -> list[str]:
        return [name for name, _, _ in self.queues]
