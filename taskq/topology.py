"""The queues taskq declares, in one place, so producer and worker declare them identically.

RabbitMQ refuses a second declaration of a queue with different arguments
(PRECONDITION_FAILED), so every side builds its ``kombu.Queue`` through these functions.
"""

from __future__ import annotations

import uuid

from kombu import Queue

DEAD_LETTER_SUFFIX = ".dead"


def dead_letter_queue_name(queue_name: str) -> str:
    return queue_name + DEAD_LETTER_SUFFIX


def task_queue(name: str, *, max_priority: int | None = None) -> Queue:
    """A durable work queue on the default exchange.

    Its broker-side dead-letter target is ``<name>.dead``: messages the broker itself
    rejects (a queue length limit, a TTL, a quorum delivery limit) land in the same place
    as the ones our worker dead-letters with a reason.
    """
    arguments = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue_name(name),
    }
    if max_priority:
        arguments["x-max-priority"] = max_priority
    return Queue(name, routing_key=name, durable=True, queue_arguments=arguments)


def dead_letter_queue(queue_name: str) -> Queue:
    """Where a task queue's unrunnable messages wait for an operator; durable, never consumed by workers."""
    name = dead_letter_queue_name(queue_name)
    return Queue(name, routing_key=name, durable=True)


def reply_queue() -> Queue:
    """One caller's private queue for results.

    Exclusive and auto-delete: it lives exactly as long as the caller's connection, so
    a crashed caller leaves no garbage on the broker.
    """
    name = f"taskq.reply.{uuid.uuid4().hex}"
    return Queue(name, routing_key=name, durable=False, exclusive=True, auto_delete=True)
