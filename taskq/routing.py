"""Routing beyond one queue per task: named direct and topic exchanges, and user events.

Two uses of the same AMQP machinery:

* Tasks sent through a named exchange with a routing key (``@app.task(exchange="animals",
  routing_key="quick.orange.rabbit")``) reach every queue bound with a matching pattern
  (``app.bind("orange", "animals", "*.orange.*")``). A message that matches two queues runs
  once from each: that is what a binding says.
* User events: ``app.publish("order.created", payload)`` goes to the shared topic exchange
  ``taskq.events``; ``@app.on("order.*", group="billing")`` binds the durable queue
  ``events.billing`` with ``order.*``. Each group gets every matching event once, and any
  number of workers share a group's queue. Events on the wire are ordinary task messages
  addressed to ``taskq.event``, so the worker runs them with the machinery it has; on
  arrival ``address`` renames them to the group's dispatcher task.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from kombu import Exchange, binding

from taskq import topology
from taskq.errors import ConfigurationError
from taskq.message import TaskMessage, unpack
from taskq.topics import topic_matches

EVENT_TASK = "taskq.event"  # the task name every user event carries on the wire
EXCHANGE_TYPES = ("direct", "topic", "fanout")


@dataclass(frozen=True)
class Binding:
    """Queue ``queue`` receives what exchange ``exchange`` routes with a key matching ``pattern``."""

    queue: str
    exchange: str
    pattern: str


@dataclass(frozen=True)
class EventHandler:
    pattern: str
    group: str
    function: Callable[[str, Any], Any]


class Routing:
    """An app's exchanges, bindings and event handlers: plain records the worker and the producer both read."""

    def __init__(self) -> None:
        self.bindings: list[Binding] = []
        self.handlers: list[EventHandler] = []
        self.exchange_types: dict[str, str] = {topology.EVENTS_EXCHANGE: "topic"}

    def declare_exchange(self, name: str, exchange_type: str) -> None:
        if exchange_type not in EXCHANGE_TYPES:
            raise ConfigurationError(f"exchange {name!r}: type must be one of {', '.join(EXCHANGE_TYPES)}")
        known = self.exchange_types.setdefault(name, exchange_type)
        if known != exchange_type:
            raise ConfigurationError(f"exchange {name!r} is already a {known} exchange, not {exchange_type}")

    def exchange(self, name: str) -> Exchange:
        """The kombu Exchange for a name: durable, of the type it was bound with (topic if never bound)."""
        return Exchange(name, type=self.exchange_types.get(name, "topic"), durable=True)

    def bind(self, queue: str, exchange: str, pattern: str, exchange_type: str = "topic") -> None:
        self.declare_exchange(exchange, exchange_type)
        entry = Binding(queue, exchange, pattern)
        if entry not in self.bindings:
            self.bindings.append(entry)

    def bindings_for(self, queue: str) -> list[Any]:
        """kombu bindings of one queue, so declaring the queue (worker or producer) declares them too."""
        return [binding(self.exchange(b.exchange), routing_key=b.pattern) for b in self.bindings if b.queue == queue]

    def queues_bound_to(self, exchange: str) -> list[str]:
        names: list[str] = []
        for entry in self.bindings:
            if entry.exchange == exchange and entry.queue not in names:
                names.append(entry.queue)
        return names

    @property
    def queue_names(self) -> list[str]:
        names: list[str] = []
        for entry in self.bindings:
            if entry.queue not in names:
                names.append(entry.queue)
        return names

    # -- user events ---------------------------------------------------------------------

    def add_handler(self, pattern: str, group: str, function: Callable[[str, Any], Any]) -> str:
        """Record a handler and bind its group's queue; returns the group's queue name."""
        queue = topology.event_queue_name(group)
        self.handlers.append(EventHandler(pattern, group, function))
        self.bind(queue, topology.EVENTS_EXCHANGE, pattern)
        return queue

    def dispatcher(self, group: str) -> Callable[[str, Any], None]:
        """The function a group's queue runs for each event: every handler of the group whose pattern matches.

        The queue's bindings already filter, but a group with two patterns gets the union,
        so each handler still checks its own pattern.
        """

        def dispatch(topic: str, payload: Any) -> None:
            import structlog  # only in the worker, to tag the task's log lines with the event's topic

            structlog.contextvars.bind_contextvars(topic=topic, group=group)
            for handler in self.handlers:
                if handler.group == group and topic_matches(handler.pattern, topic):
                    handler.function(topic, payload)

        dispatch.__name__ = dispatch.__qualname__ = f"dispatch_{group}"
        return dispatch


def address(message: TaskMessage, queue: str) -> TaskMessage:
    """A user event arriving on ``events.<group>`` becomes a call of that group's dispatcher task."""
    if message.task == EVENT_TASK and queue.startswith(topology.EVENT_QUEUE_PREFIX):
        return replace(message, task=queue)
    return message


def event_payload(body: Any) -> Any:
    """The payload of a user event as it travels (a task message whose args are ``[topic,
    payload]``); raises for a body that is not one."""
    return unpack(body).get("args", [None, None])[1]
