"""The App: the one object a user configures; it knows the broker and the registered tasks.

What a send puts on the wire (reply listener, delay cascade or exchange, publish hooks) is
taskq/producer.py's job; the App hands each send to its Producer.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from datetime import timedelta
from typing import Any, Callable, Iterable, TypeVar, overload

from kombu.entity import Queue

from taskq import delay, revocation, routing, schedules, settings, topology
from taskq.broker import Broker, resolve_broker_url
from taskq.errors import ConfigurationError
from taskq.message import TaskMessage
from taskq.middleware import Middleware, default_middleware
from taskq.middleware.app_hooks import AppHooks
from taskq.middleware.pipeline import task_settings
from taskq.middleware.rate_limits import RateLimits
from taskq.middleware.state_store import StateRecorder
from taskq.middleware.workflows import Workflows
from taskq.producer import Producer
from taskq.results import AsyncResult
from taskq.state import Results, StateStore, StoredResult
from taskq.task import Params, Returns, Task, TaskOptions, refuse_unrunnable

Hook = TypeVar("Hook", bound=Callable[..., Any])


class App:
    """Configuration, task registry and the caller's side of the broker.

    ``broker``: a kombu URL. Without one, ``$TASKQ_BROKER_URL``, then the embedded broker
    (a SQLite file under ./.taskq, docs/embedded-broker.md).
    Nothing connects until the first publish, so importing an app module is cheap and safe
    to do before forking worker processes.

    ``queue_type="quorum"`` declares replicated quorum queues; ``delivery_limit`` (quorum
    only) dead-letters a message redelivered that many times, e.g. one that kills every
    worker that takes it. Queues already on the broker keep their type: RabbitMQ refuses
    to redeclare a queue with other arguments.

    ``middleware``: what the worker does around each task, in order (docs/middleware.md);
    default ``taskq.middleware.default_middleware()`` (expiry, eta, retries, time limits).

    ``results``: a state store, for task state and results by id from any process
    (``app.result(id)``, docs/results.md): ``"embedded"``, ``"sqlite:///path"``,
    ``"redis://host:port/db"`` or a ``taskq.state.StateStore``; None (default): RPC only.
    """

    def __init__(
        self,
        name: str = settings.APP_NAME,
        *,
        broker: str | None = None,
        default_queue: str = settings.DEFAULT_QUEUE,
        heartbeat: float = settings.HEARTBEAT,
        max_priority: int | None = None,
        queue_type: str = settings.QUEUE_TYPE,
        delivery_limit: int | None = None,
        middleware: Iterable[Middleware] | None = None,
        results: str | StateStore | None = None,
    ) -> None:
        if queue_type not in topology.QUEUE_TYPES:
            raise ConfigurationError(f"queue_type must be one of {', '.join(topology.QUEUE_TYPES)}, not {queue_type!r}")
        if queue_type == "quorum" and max_priority:
            raise ConfigurationError("quorum queues don't support priorities (x-max-priority): drop max_priority or use classic queues")
        if delivery_limit is not None and queue_type != "quorum":
            raise ConfigurationError("delivery_limit needs queue_type='quorum': classic queues don't count deliveries")
        if delivery_limit is not None and delivery_limit < 1:
            raise ConfigurationError("delivery_limit must be at least 1")
        self.name = name
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        self.default_queue = default_queue
        self.heartbeat = heartbeat
        self.max_priority = max_priority
        self.tasks: dict[str, Task[..., Any]] = {}
        self.routing = routing.Routing()
        self._explicit_broker_url = broker
        self._broker: Broker | None = None
        self._queues: dict[tuple[Any, ...], Any] = {}  # see queue()
        self._dead_letter_queues: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()
        self.middleware: list[Middleware] = list(default_middleware() if middleware is None else middleware)
        self._app_hooks: AppHooks | None = None
        self.results = Results(results, lambda: self.broker.url) if results is not None else None
        # Every app continues workflows (a message may carry one); before the recorder, which records its decision.
        self.middleware.append(Workflows(self.results.store if self.results is not None else None,
                                         lambda name: (self.queue(name), self.dead_letter_queue(name))))
        if self.results is not None:  # last: it records what the others decided
            self.middleware.append(RateLimits(self.results.store))
            self.middleware.append(StateRecorder(self.results.store))
        self._producer = Producer(self)  # sends and their reply listener (taskq/producer.py); reads the hooks above
        self.schedules: dict[str, schedules.Schedule] = {}  # fired by `taskq scheduler` (taskq/scheduler.py)

    def __repr__(self) -> str:
        return f"<App {self.name} tasks={len(self.tasks)}>"

    # -- configuration -------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        with self._lock:
            if self._broker is None:
                self._broker = Broker(resolve_broker_url(self._explicit_broker_url))
            return self._broker

    def use_broker(self, url: str) -> None:
        """Point the app at another broker (the CLI's --broker); call before anything is sent."""
        self.close()
        with self._lock:
            self._explicit_broker_url = url
            self._broker = None

    @property
    def broker_delays(self) -> bool:
        """Whether the broker can hold delayed messages (countdown, eta, retry backoff).

        The delay cascade (taskq.delay) needs TTLs, dead-lettering and exchange-to-exchange
        bindings: RabbitMQ and the embedded broker have them; kombu's in-memory broker
        (used by the test fixtures) does not.
        """
        return self.broker.driver_type in ("amqp", "sqlite")

    def queue(self, name: str) -> Queue:
        """The kombu Queue for a work queue, declared the same way by every side.

        Built once per name and settings (the broker, and so whether it delays, can be
        swapped, and ``bind`` adds bindings): building kombu entities was a tenth of a
        ``.delay()``. Callers bind a copy to their channel (``queue(channel)``, kombu's
        ``maybe_declare``), never this one.
        """
        delayable = self.broker_delays
        key = (name, delayable, self.max_priority, self.queue_type, self.delivery_limit, len(self.routing.bindings))
        queue = self._queues.get(key)
        if queue is None:
            problem = delay.check_queue_name(name) if delayable else None
            if problem:
                raise ConfigurationError(problem)
            queue = topology.task_queue(
                name, max_priority=self.max_priority, queue_type=self.queue_type, delivery_limit=self.delivery_limit,
                delayable=delayable,
            )
            queue.bindings.update(self.routing.bindings_for(name))  # app.bind's, beside any the queue has
            self._queues[key] = queue
        return queue

    def dead_letter_queue(self, name: str) -> Queue:
        """The kombu Queue for ``<name>.dead`` (built once per name and queue type, as ``queue``)."""
        key = (name, self.queue_type)
        queue = self._dead_letter_queues.get(key)
        if queue is None:
            queue = self._dead_letter_queues[key] = topology.dead_letter_queue(name, self.queue_type)
        return queue

    @property
    def queue_names(self) -> list[str]:
        """Every queue a task of this app is routed to, default queue first."""
        names = [self.default_queue]
        for task in self.tasks.values():
            if task.options.queue not in names:
                names.append(task.options.queue)
        names.extend(name for name in self.routing.queue_names if name not in names)
        return names

    # -- tasks ---------------------------------------------------------------------------

    # Both forms keep the function's signature on the Task (see taskq.task.Task).
    @overload
    def task(self, function: Callable[Params, Returns]) -> Task[Params, Returns]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        ignore_result: bool = False,
        exchange: str | None = None,
        routing_key: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[Params, Returns]], Task[Params, Returns]]: ...

    def task(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        ignore_result: bool = False,
        exchange: str | None = None,
        routing_key: str | None = None,
        **options: Any,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue="orders", max_retries=3)``.

        With ``exchange`` (and ``routing_key``, default the task's name) it is sent through
        that exchange instead, to whichever queues ``app.bind`` bound to it. The other
        options belong to the app's middleware: ``max_retries``, ``retry_backoff``,
        ``retry_backoff_max``, ``retry_jitter``, ``retry_for`` (taskq.middleware.Retries),
        ``time_limit`` and ``soft_time_limit`` in seconds (TimeLimits; docs/reliability.md).
        """

        def register(fn: Callable[Params, Returns]) -> Task[Params, Returns]:
            label = name or fn.__qualname__
            task_options = TaskOptions(
                name=name or default_task_name(fn),
                queue=queue or self.default_queue,
                ignore_result=ignore_result,
                exchange=exchange,
                routing_key=routing_key,
                settings=task_settings(self.middleware, CORE_TASK_OPTIONS, label, options),
            )
            refuse_unrunnable(fn, f"task {task_options.name!r}")
            if task_options.name in self.tasks:
                raise ConfigurationError(f"two tasks are named {task_options.name!r}")
            task = Task(self, fn, task_options)
            self.tasks[task_options.name] = task
            return task

        return register(function) if function is not None else register

    def periodic(self, *, every: float | timedelta | None = None, cron: str | None = None, timezone: str | None = None,
                 args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None, priority: int | None = None,
                 catch_up: str = "once", **task_options: Any) -> Callable[[Callable[Params, Returns]], Task[Params, Returns]]:
        """Make a function a task and schedule it: ``@app.periodic(every=30)``, ``@app.periodic(cron="0 3 * * *",
        timezone="Europe/Paris")``; the other options are ``@app.task``'s (docs/periodic.md)."""
        when: dict[str, Any] = {"every": every, "cron": cron, "timezone": timezone, "catch_up": catch_up, "args": args, "kwargs": kwargs,
                "priority": priority}
        schedules.make_schedule("check", **when)  # now: a bad schedule fails at decoration and leaves no task behind

        def register(fn: Callable[Params, Returns]) -> Task[Params, Returns]:
            task: Task[Params, Returns] = self.task(**task_options)(fn)
            self.schedule(task, **when)
            return task

        return register

    def schedule(self, task: Task[..., Any] | str, **schedule: Any) -> schedules.Schedule:
        """Fire an existing task (or a task name) on a schedule: ``every=``/``cron=``, ``timezone``, ``args``,
        ``kwargs``, ``queue``, ``priority``, ``catch_up`` (``"once"``, ``"all"``, ``"skip"``), ``name``."""
        entry = schedules.make_schedule(task if isinstance(task, str) else task.options.name, **schedule)
        if entry.name in self.schedules:
            raise ConfigurationError(f"two schedules are named {entry.name!r} (give one name=)")
        self.schedules[entry.name] = entry
        return entry

    # -- middleware and hooks --------------------------------------------------------------

    def add_middleware(self, middleware: Middleware, *, before: type[Middleware] | None = None,
                       after: type[Middleware] | None = None) -> None:
        """Add a middleware at the end, or just before (after) the first of the app's middleware of that class.

        Add it before declaring the tasks that use its options, and before workers start.
        """
        if before is not None and after is not None:
            raise ConfigurationError("add_middleware takes before= or after=, not both")
        anchor = before or after
        position = len(self.middleware)
        if anchor is not None:
            found = [index for index, m in enumerate(self.middleware) if isinstance(m, anchor)]
            if not found:
                raise ConfigurationError(f"add_middleware: the app has no {anchor.__name__} middleware")
            position = found[0] if before is not None else found[0] + 1
        self.middleware.insert(position, middleware)
        self._producer.use_hooks()

    def _hook(self, name: str, function: Hook) -> Hook:
        if self._app_hooks is None:
            self._app_hooks = AppHooks()
            self.middleware.append(self._app_hooks)
        self._app_hooks.add(name, function)
        return function

    def on_task_start(self, function: Hook) -> Hook:
        """Decorator: ``function(delivery)`` runs in the worker just before each task (taskq.middleware.Delivery)."""
        return self._hook("on_task_start", function)

    def on_task_success(self, function: Hook) -> Hook:
        """Decorator: ``function(delivery)`` after a task returned (``delivery.outcome.reply.result``) and was acked."""
        return self._hook("on_task_success", function)

    def on_task_failure(self, function: Hook) -> Hook:
        """Decorator: ``function(delivery)`` after a task raised (``delivery.outcome.exception``), before its retry or dead letter."""
        return self._hook("on_task_failure", function)

    def on_task_retry(self, function: Hook) -> Hook:
        """Decorator: ``function(delivery, decision)`` once a failed task was sent again (``decision.countdown`` s)."""
        return self._hook("on_task_retry", function)

    def on_dead_letter(self, function: Hook) -> Hook:
        """Decorator: ``function(delivery, decision)`` once a message went to ``<queue>.dead`` (``decision.reason``)."""
        return self._hook("on_dead_letter", function)

    def on_worker_start(self, function: Hook) -> Hook:
        """Decorator: ``function(worker)`` in each worker child as it starts (taskq.middleware.WorkerInfo)."""
        return self._hook("on_worker_start", function)

    def on_worker_stop(self, function: Hook) -> Hook:
        """Decorator: ``function()`` in each worker child as it stops."""
        return self._hook("on_worker_stop", function)

    # -- sending -------------------------------------------------------------------------

    def send(
        self,
        message: TaskMessage,
        *,
        queue: str,
        priority: int | None = None,
        want_result: bool = True,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> AsyncResult[Any]:
        """Publish a task message persistently and wait for the broker's confirm.

        A message with a future ``eta`` goes into the broker's delay cascade, which hands
        it to ``queue`` when the time comes.

        Through ``exchange``, the message is mandatory: if no binding matches ``routing_key``
        the broker returns it and this raises ``Unroutable`` instead of losing the task.
        """
        return self._producer.send(message, queue=queue, priority=priority, want_result=want_result,
                                   exchange=exchange, routing_key=routing_key)

    def send_many(self, messages: list[TaskMessage], *, queue: str, want_result: bool = True) -> list[AsyncResult[Any]]:
        """Publish a burst of task messages to one queue with pipelined confirms.

        Returns once the broker confirmed every one of them (or raises PublishError).
        """
        return self._producer.send_many(messages, queue=queue, want_result=want_result)

    def send_task(
        self,
        name: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        want_result: bool = True,
    ) -> AsyncResult[Any]:
        """Send a task by name, for callers that don't import its code (other systems, the CLI)."""
        task = self.tasks.get(name)
        message = TaskMessage(id=str(uuid.uuid4()), task=name, args=tuple(args), kwargs=dict(kwargs or {}))
        target = queue or (task.options.queue if task else self.default_queue)
        return self.send(message, queue=target, want_result=want_result)

    # -- routing and user events ---------------------------------------------------------

    def bind(self, queue: str, exchange: str, pattern: str, *, exchange_type: str = "topic") -> App:
        """Bind work queue ``queue`` to ``exchange`` with a routing-key pattern (``*.orange.*``, ``lazy.#``).

        Workers of this app then consume ``queue`` and declare the binding when they start.
        """
        self.routing.bind(queue, exchange, pattern, exchange_type)
        return self

    def on(self, pattern: str, *, group: str | None = None) -> Callable[[Callable[[str, Any], Any]], Callable[[str, Any], Any]]:
        """Run the decorated ``handler(topic, payload)`` for every user event matching ``pattern``.

        Each ``group`` (default: the app's name) has its own durable queue ``events.<group>``,
        so every group gets each event once, and the group's workers share the work.
        """

        def register(function: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
            refuse_unrunnable(function, f"event handler {default_task_name(function)!r}", coroutines=False)
            group_name = group or self.name
            queue = self.routing.add_handler(pattern, group_name, function)
            if queue not in self.tasks:
                options = TaskOptions(name=queue, queue=queue, ignore_result=True)
                self.tasks[queue] = Task(self, self.routing.dispatcher(group_name), options)
            return function

        return register

    def publish(self, topic: str, payload: Any = None) -> str:
        """Publish a user event on the ``taskq.events`` topic exchange: persistent, confirmed.

        Returns the event's id. Groups whose queue exists get it, whether their workers run now
        or later; an event no group is bound for is dropped, as pub/sub means.
        """
        return self._producer.publish_event(topic, payload)

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        """Revoke a task: dead-lettered (``revoked``) when a worker meets it; with ``terminate``,
        stopped if it runs. Returns once the broker confirmed it (docs/revoke.md)."""
        revocation.publish(self.broker, self.name, task_id, terminate)

    def result(self, task_id: str) -> StoredResult:
        """Task ``task_id``'s state and result, read from the state store: works in any process."""
        if self.results is None:
            raise ConfigurationError("app.result() reads the state store: build the App with results=URL (docs/results.md)")
        return StoredResult(self.results.store(), task_id)

    def close(self) -> None:
        """Close the app's connections; the next send opens new ones."""
        with self._lock:
            broker = self._broker
        self._producer.close()
        if broker is not None:
            broker.close()

    def forget_connections_after_fork(self) -> None:
        """In a forked worker child: never reuse the parent's sockets or threads."""
        self._lock = threading.RLock()
        self._producer.forget_connections_after_fork()
        if self._broker is not None:
            self._broker.forget_connections_after_fork()


#: The options of ``@app.task`` that are the App's own; the rest belong to its middleware.
CORE_TASK_OPTIONS = ("name", "queue", "ignore_result", "exchange", "routing_key")


def default_task_name(function: Callable[..., Any]) -> str:
    """``module.qualname``; a script run as __main__ is named after its file, as the worker will import it."""
    module = function.__module__
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        else:
            module = os.path.splitext(os.path.basename(getattr(main, "__file__", "main")))[0]
    return f"{module}.{function.__qualname__}"
