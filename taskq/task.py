"""A task: a plain function plus where and how to send it."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Mapping, ParamSpec, TypeVar

from taskq import aio, delay
from taskq.canvas import Signature
from taskq.errors import UnsupportedTask
from taskq.message import TaskMessage

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.results import AsyncResult

Params = ParamSpec("Params")  # the decorated function's parameters
Returns = TypeVar("Returns")  # what it returns, and so what ``AsyncResult.get()`` gives back


@dataclass(frozen=True)
class TaskOptions:
    """What a task's decorator said; plain data so the worker and the CLI can read it.

    The core options are fields; the options a middleware owns (``max_retries``,
    ``time_limit``, ... see ``Middleware.task_options``) are in ``settings``, defaults filled in.
    """

    name: str
    queue: str
    ignore_result: bool = False
    exchange: str | None = None  # a named exchange instead of the queue (see App.bind)
    routing_key: str | None = None  # with ``exchange``; default the task's name
    settings: Mapping[str, Any] = field(default_factory=dict)


def refuse_unrunnable(function: Callable[..., Any], label: str, coroutines: bool = True) -> None:
    """Raise UnsupportedTask for a function whose call returns a generator (or, with
    ``coroutines=False``, a coroutine).

    The worker would call it, run none of its body, and find a result msgpack can't
    carry: every call dead-lettered, or, with ``ignore_result``, acked as a success
    although nothing ran. Refused at decoration, it fails once, at import, with the way out.
    A generator is no stream of results either: there is one reply per task. ``async def``
    tasks run on an event loop in the worker (taskq/worker/async_running.py); event
    handlers are called inline by code that has no loop, so they are still refused.
    """
    if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
        kind = "an async generator function" if inspect.isasyncgenfunction(function) else "a generator function"
        raise UnsupportedTask(
            f"{label}: {kind} can't be a task: calling it runs none of its body; return a list from a plain def instead"
        )
    if not coroutines and inspect.iscoroutinefunction(function):
        raise UnsupportedTask(
            f"{label}: async event handlers are not supported; make it a plain def that calls asyncio.run(...) on the coroutine"
        )


class Task(Generic[Params, Returns]):
    """Wraps a function: calling it runs it here, ``delay``/``apply_async`` send it to a worker.

    Generic over the function's signature, so a type checker holds ``delay`` to the
    function's parameters and knows what ``delay(...).get()`` returns: a wrong argument
    is caught before it becomes a dead letter. ``apply_async`` takes the arguments as a
    tuple and a dict, which no checker can match to a signature.
    """

    def __init__(self, app: App, function: Callable[Params, Returns], options: TaskOptions) -> None:
        self.app = app
        self.function = function
        self.options = options
        functools.update_wrapper(self, function)

    @property
    def name(self) -> str:
        return self.options.name

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"

    def __call__(self, *args: Params.args, **kwargs: Params.kwargs) -> Returns:
        return self.function(*args, **kwargs)

    def delay(self, *args: Params.args, **kwargs: Params.kwargs) -> AsyncResult[Returns]:
        """Send with default options; returns once the broker has confirmed the message."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Params.args, **kwargs: Params.kwargs) -> AsyncResult[Returns]:
        """``delay`` for an event loop: the publish and its confirm wait on a sender thread
        (taskq/aio.py), never on the loop."""
        return await aio.in_sender_thread(functools.partial(self.apply_async, args, kwargs))

    async def aapply_async(self, args: tuple[Any, ...] | list[Any] = (), kwargs: dict[str, Any] | None = None,
                           **options: Any) -> AsyncResult[Returns]:
        """``apply_async`` for an event loop, with the same options."""
        return await aio.in_sender_thread(functools.partial(self.apply_async, args, kwargs, **options))

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        expires: float | dt.datetime | None = None,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        routing_key: str | None = None,
    ) -> AsyncResult[Returns]:
        """Send with options. ``expires`` is seconds from now or an aware datetime: a message
        reaching a worker later than that is dead-lettered with reason ``expired``.

        ``countdown`` (seconds) or ``eta`` (an aware datetime) delays the run: the broker
        holds the message meanwhile (see ``taskq.delay``), no worker does.

        ``routing_key`` overrides the decorator's for a task sent through an exchange; an
        explicit ``queue`` sends straight to that queue instead.
        """
        now = time.time()
        run_at = delay.eta_from(countdown, eta, now)
        deadline = expires_at(expires, now)
        if run_at is not None and deadline is not None and run_at >= deadline:
            raise ValueError("the task would expire before its eta: it could never run")
        message = TaskMessage(
            id=task_id or str(uuid.uuid4()),
            task=self.name,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            expires_at=deadline,
            eta=run_at if delay.delay_ms(run_at, now) else None,
        )
        return self.app.send(
            message,
            queue=queue or self.options.queue,
            priority=priority,
            want_result=not self.options.ignore_result,
            exchange=None if queue else self.options.exchange,
            routing_key=routing_key or self.options.routing_key,
        )


    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature for workflows (taskq.chain/group/chord): in a chain it receives the previous
        step's result before ``args``."""
        return Signature(self, tuple(args), dict(kwargs))

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain it ignores the previous step's result."""
        return Signature(self, tuple(args), dict(kwargs), immutable=True)

    def map(self, arguments: Iterable[tuple[Any, ...] | list[Any]], *, queue: str | None = None) -> list[AsyncResult[Returns]]:
        """Send one task per item (each item is that task's positional arguments), as a burst.

        Much faster than a loop of ``delay`` for large bursts: publisher confirms are
        pipelined instead of awaited one by one. Returns when the broker has them all.
        """
        if self.options.exchange and queue is None:  # routed: each message goes where its bindings say
            return [self.apply_async(args) for args in arguments]
        messages = [
            TaskMessage(id=str(uuid.uuid4()), task=self.name, args=tuple(args)) for args in arguments
        ]
        return self.app.send_many(
            messages, queue=queue or self.options.queue, want_result=not self.options.ignore_result
        )


def expires_at(expires: float | dt.datetime | None, now: float | None = None) -> float | None:
    """Turn ``expires`` into an absolute epoch time, the form that survives the trip."""
    if expires is None:
        return None
    if isinstance(expires, dt.datetime):
        if expires.tzinfo is None:
            raise ValueError("expires must be a timezone-aware datetime (or seconds from now)")
        return expires.timestamp()
    return (now if now is not None else time.time()) + float(expires)
