"""The queues taskq declares, in one place, so producer and worker declare them identically.

RabbitMQ refuses a second declaration of a queue with different arguments
(PRECONDITION_FAILED), so every side builds its ``kombu.Queue`` through these functions.
"""

from __future__ import annotations

import uuid

from kombu import Exchange, Queue, binding

from taskq import delay

DEAD_LETTER_SUFFIX = ".dead"


def dead_letter_queue_name(queue_name: str) -> str:
    return queue_name + DEAD_LETTER_SUFFIX


QUEUE_TYPES = ("classic", "quorum")


def task_queue(
    name: str,
    *,
    max_priority: int | None = None,
    queue_type: str = "classic",
    delivery_limit: int | None = None,
    delayable: bool = True,
) -> Queue:
    """A durable work queue on the default exchange, also bound to the delay cascade's exit.

    Its broker-side dead-letter target is ``<name>.dead``: messages the broker itself
    rejects (a queue length limit, a TTL, a quorum delivery limit) land in the same place
    as the ones our worker dead-letters with a reason. A quorum queue dead-letters
    ``at-least-once``: the broker keeps the message until ``.dead`` has it.
    ``delayable=False`` (brokers without the delay cascade) leaves out its binding.
    """
    arguments: dict[str, int | str] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue_name(name),
    }
    if max_priority:
        arguments["x-max-priority"] = max_priority
    if queue_type == "quorum":
        arguments.update({"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        if delivery_limit is not None:
            arguments["x-delivery-limit"] = delivery_limit
    # The default exchange routes by queue name; the delay cascade ends in a topic
    # exchange that needs an explicit binding. kombu drops ``exchange`` when
    # ``bindings`` is given, and the default exchange needs no binding anyway.
    if not delayable:
        return Queue(name, routing_key=name, durable=True, queue_arguments=arguments)
    exit_binding = binding(delay.delivery_exchange(queue_type), routing_key=delay.delivery_binding_key(name))
    return Queue(name, routing_key=name, durable=True, queue_arguments=arguments, bindings=[exit_binding])


def dead_letter_queue(queue_name: str, queue_type: str = "classic") -> Queue:
    """Where a task queue's unrunnable messages wait for an operator; durable, never consumed by workers."""
    name = dead_letter_queue_name(queue_name)
    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else None
    return Queue(name, routing_key=name, durable=True, queue_arguments=arguments)


def reply_queue() -> Queue:
    """One caller's private queue for results.

    Exclusive and auto-delete: it lives exactly as long as the caller's connection, so
    a crashed caller leaves no garbage on the broker.
    """
    name = f"taskq.reply.{uuid.uuid4().hex}"
    return Queue(name, routing_key=name, durable=False, exclusive=True, auto_delete=True)


# -- broadcasting and routing -----------------------------------------------------------

LOGS_EXCHANGE = "taskq.logs"
LIFECYCLE_EXCHANGE = "taskq.lifecycle"
EVENTS_EXCHANGE = "taskq.events"
EVENT_QUEUE_PREFIX = "events."


def logs_exchange() -> Exchange:
    """Fanout for every worker's log records: each listener gets every line, nobody listening costs nothing.

    The exchange is durable (declaring it costs nothing and it survives a broker restart,
    so a worker publishing right after one never hits a missing exchange); the records on
    it are transient.
    """
    return Exchange(LOGS_EXCHANGE, type="fanout", durable=True)


def lifecycle_exchange() -> Exchange:
    """Task and worker lifecycle events, routed by kind (``task.succeeded``, ``worker.heartbeat``).

    A topic exchange, not a second fanout, so ``taskq status`` can bind ``worker.*`` alone and
    a busy cluster's thousands of task events never crowd heartbeats out of its bounded queue.
    """
    return Exchange(LIFECYCLE_EXCHANGE, type="topic", durable=True)


def events_exchange() -> Exchange:
    """The durable topic exchange of user events (``app.publish`` / ``@app.on``), shared by every app."""
    return Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


def event_queue_name(group: str) -> str:
    return EVENT_QUEUE_PREFIX + group


def subscriber_queue(exchange: Exchange, binding_keys: list[str], *, max_length: int) -> Queue:
    """One listener's private queue on a broadcast exchange.

    Exclusive and auto-delete, so it vanishes with the listener; ``x-max-length`` with
    ``drop-head`` so a listener that can't keep up loses its oldest lines instead of making
    the broker hold an ever-growing backlog (or push back on the workers that publish).
    """
    name = f"taskq.listen.{uuid.uuid4().hex}"
    arguments = {"x-max-length": max_length, "x-overflow": "drop-head"}
    bindings = [binding(exchange, routing_key=key) for key in binding_keys]
    return Queue(
        name, bindings=bindings, durable=False, exclusive=True, auto_delete=True, queue_arguments=arguments
    )


# -- the scheduler (taskq/scheduler.py) -------------------------------------------------

SCHEDULER_EXCHANGE = "taskq.scheduler"


def scheduler_exchange() -> Exchange:
    """Where a scheduler fires: one publish, routed both to the task's queue and to the
    schedule's last-tick queue, so a tick is in both or in neither (no window between a
    fire and its record for a crash to fall into)."""
    return Exchange(SCHEDULER_EXCHANGE, type="direct", durable=True)


def scheduler_routing_key(app_name: str, schedule_name: str) -> str:
    return f"{app_name}.{schedule_name}"


def scheduler_lease_queue(app_name: str) -> Queue:
    """The leader's lease: exclusive, so one connection at a time may declare it; the broker
    deletes it when that connection dies (closed socket, or missed heartbeats), and the next
    scheduler's declaration succeeds."""
    name = f"taskq.scheduler.{app_name}.lease"
    return Queue(name, routing_key=name, durable=False, exclusive=True, auto_delete=False)


def last_tick_queue(app_name: str, schedule_name: str, queue_type: str = "classic") -> Queue:
    """The last message a schedule fired, kept durably: ``x-max-length`` 1 with ``drop-head``,
    so each fire replaces the one before; never consumed, only peeked at by a new leader.
    Readers never touch it (they read ``schedule_status_queue``): a peek hides the message,
    and a leader taking over behind a reader's peek would think the schedule never fired."""
    return _newest_fire_queue(f"taskq.scheduler.{app_name}.last.{schedule_name}", app_name, schedule_name, queue_type)


def schedule_status_queue(app_name: str, schedule_name: str, queue_type: str = "classic") -> Queue:
    """The readers' copy of the last fire (``taskq status``, the dashboard): bound like the
    last-tick queue, so the same publish lands in it, and peeked at by anyone who asks."""
    return _newest_fire_queue(f"taskq.scheduler.{app_name}.seen.{schedule_name}", app_name, schedule_name, queue_type)


def _newest_fire_queue(name: str, app_name: str, schedule_name: str, queue_type: str) -> Queue:
    arguments: dict[str, int | str] = {"x-max-length": 1, "x-overflow": "drop-head"}
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    key = scheduler_routing_key(app_name, schedule_name)
    return Queue(name, exchange=scheduler_exchange(), routing_key=key, durable=True, queue_arguments=arguments)


def scheduler_leader_queue(app_name: str) -> Queue:
    """Who took the lease last (host, pid, since), for ``taskq status``: max-length 1, each
    new leader's record replaces the one before. Not the lease itself, which only the
    exclusive queue is; a record whose lease is gone names a leader that died."""
    name = f"taskq.scheduler.{app_name}.leader"
    return Queue(name, routing_key=name, durable=True, queue_arguments={"x-max-length": 1, "x-overflow": "drop-head"})
