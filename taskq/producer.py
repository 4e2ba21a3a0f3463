"""The caller's side of the broker: how an App's task messages and user events go out.

Why apart from the App: the App is configuration and a registry, read by workers and
callers alike; what one send puts on the wire is a job of its own, and the one every
``.delay()`` runs through. For a task message: the reply listener and the RPC properties
(``reply_to``, ``correlation_id``), the target (the delay cascade, or a named exchange as
a mandatory message), the middleware's ``before_publish`` hooks (a failing one is logged,
never stops the send), and one retry budget for the whole send (taskq.broker).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from taskq import delay, routing, topology
from taskq.broker import Outgoing
from taskq.errors import ConfigurationError
from taskq.message import TaskMessage
from taskq.middleware.pipeline import failed
from taskq.results import AsyncResult, ReplyListener

if TYPE_CHECKING:
    from taskq.app import App


class Producer:
    """Publishes for one App; owns the App's reply listener (started on the first send that wants a result)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._listener: ReplyListener | None = None
        self._lock = threading.Lock()
        self._publish_hooks: list[Callable[..., Any]] = []
        self.use_hooks()

    def use_hooks(self) -> None:
        """Take the app's ``before_publish`` hooks again (after ``add_middleware``): asked for once,
        not per send, so an app whose middleware has none pays nothing for them."""
        self._publish_hooks = [m.before_publish for m in self._app.middleware if "before_publish" in m.used_hooks()]

    def send(self, message: TaskMessage, *, queue: str, priority: int | None, want_result: bool,
             exchange: str | None, routing_key: str | None) -> AsyncResult[Any]:
        """``App.send``: see there."""
        app = self._app
        listener = None
        budget = app.broker.budget()  # one for the whole send: opening the reply listener, then publishing
        properties: dict[str, Any] = {"message_id": message.id}
        if want_result:
            # The RPC pair: the reply comes back to reply_to, matched by correlation_id.
            # Without a reply there is nothing to correlate, and each property of a
            # persistent message costs the broker (benchmarks.md).
            listener = self.reply_listener()
            properties["reply_to"] = listener.reply_to(budget)
            properties["correlation_id"] = message.reply_id  # a workflow's steps reply as the workflow
            listener.expect(message.reply_id)
            message = replace(message, reply_to=properties["reply_to"])
        if priority is not None:
            properties["priority"] = priority
        if message.eta is not None and not app.broker_delays:
            raise ConfigurationError(
                f"countdown/eta need RabbitMQ (delayed delivery uses its TTLs and dead-lettering); "
                f"the broker {app.broker.masked_url} has no such thing"
            )
        if exchange:
            target = self._routed_target(exchange, routing_key or message.task, message.eta)
        else:
            delay_exchange, delay_key, delay_entities = delay.route(queue, message.eta, app.queue_type)
            target = {
                "exchange": delay_exchange,
                "routing_key": delay_key,
                "declare": [app.queue(queue), app.dead_letter_queue(queue), *delay_entities],
            }
        try:
            headers = message.headers()
            if self._publish_hooks:
                self._before_publish(message, headers)
            app.broker.publish(message.body(), headers=headers, budget=budget, **target, **properties)
        except BaseException:
            if listener is not None:
                listener.forget(message.reply_id)
            raise
        return AsyncResult(message.reply_id, message.task, listener, app.revoke)

    def send_many(self, messages: list[TaskMessage], *, queue: str, want_result: bool) -> list[AsyncResult[Any]]:
        """``App.send_many``: see there."""
        app = self._app
        listener = self.reply_listener() if want_result else None
        reply_to = listener.reply_to() if listener is not None else None
        outgoing = []
        for message in messages:
            properties: dict[str, Any] = {"message_id": message.id}
            if listener is not None:
                message = replace(message, reply_to=reply_to)
                properties.update(reply_to=reply_to, correlation_id=message.id)
                listener.expect(message.id)
            headers = message.headers()
            if self._publish_hooks:
                self._before_publish(message, headers)
            outgoing.append(Outgoing(message.body(), queue, headers, properties))
        try:
            app.broker.publish_many(outgoing, declare=[app.queue(queue), app.dead_letter_queue(queue)])
        except BaseException:
            if listener is not None:
                for message in messages:
                    listener.forget(message.id)
            raise
        return [AsyncResult(message.id, message.task, listener, app.revoke) for message in messages]

    def publish_event(self, topic: str, payload: Any) -> str:
        """``App.publish``: see there."""
        app = self._app
        message = TaskMessage(id=str(uuid.uuid4()), task=routing.EVENT_TASK, args=(topic, payload))
        declare: list[Any] = [topology.events_exchange()]  # the exchange, then the app's own queues bound to it
        declare += [app.queue(name) for name in app.routing.queues_bound_to(topology.EVENTS_EXCHANGE)]
        app.broker.publish(
            message.body(),
            exchange=topology.EVENTS_EXCHANGE,
            routing_key=topic,
            headers={**message.headers(), "topic": topic},
            declare=declare,
            message_id=message.id,
        )
        return message.id

    def _before_publish(self, message: TaskMessage, headers: dict[str, Any]) -> None:
        for hook in self._publish_hooks:
            try:
                hook(message, headers)
            except Exception as exc:  # a tracing exporter's bug must not stop the send
                failed(hook, "before_publish", exc)

    def _routed_target(self, exchange: str, routing_key: str, eta: float | None) -> dict[str, Any]:
        """Publish arguments for a named exchange: declare it and the app's queues bound to it, so the
        bindings exist before the first message even if no worker ever ran."""
        if eta is not None:
            # The delay cascade delivers to one named queue; the exchange may route to several.
            raise ConfigurationError(f"countdown/eta can't be combined with routing through exchange {exchange!r}")
        app = self._app
        declare: list[Any] = [app.routing.exchange(exchange)]
        for name in app.routing.queues_bound_to(exchange):
            declare += [app.queue(name), app.dead_letter_queue(name)]
        return {"exchange": exchange, "routing_key": routing_key, "declare": declare, "mandatory": True}

    def reply_listener(self) -> ReplyListener:
        with self._lock:
            if self._listener is None:
                self._listener = ReplyListener(self._app.broker)
            return self._listener

    def close(self) -> None:
        """Stop the reply listener; the next send that wants a result starts another."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    def forget_connections_after_fork(self) -> None:
        """In a forked worker child: never reuse the parent's listener thread or its lock."""
        self._lock = threading.Lock()
        self._listener = None
