"""Reading, replaying and purging ``<queue>.dead``: what the ``taskq dead`` commands call.

How messages are read without losing or reordering them: ``basic.get`` *without* ack on
a channel of our own, then closing that channel. RabbitMQ puts unacked messages back
where they were (classic and quorum queues alike), so a listing leaves the queue as it
found it; if we crash halfway, the broker does the same. Nothing is ever held past the
call. (A quorum ``.dead`` queue counts the look in its ``x-delivery-count`` header;
replay strips it.)

Replay publishes a copy to the original queue with publisher confirms and acks the
dead letter only after the confirm: a crash in between leaves the message in both
places (it may run twice), never in neither.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu import Connection

from taskq import copies, topology
from taskq.broker import Broker, connection_problem, publish_on
from taskq.errors import NoSuchQueue, TaskqError


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, as an operator wants to see it."""

    task_id: str
    task: str
    reason: str
    detail: str
    original_queue: str
    attempts: int | None
    exc_type: str
    exc_message: str
    traceback: str = ""  # the worker's, for tasks that failed; long, so `dead list` leaves it out

    @classmethod
    def from_message(cls, message: Any, queue_name: str) -> DeadLetter:
        headers = message.headers or {}
        properties = message.properties or {}
        broker_death = first_death(headers)
        return cls(
            task_id=str(headers.get("id") or properties.get("correlation_id") or properties.get("message_id") or "?"),
            task=str(headers.get("task", "?")),
            # Dead-lettered by the broker (quorum delivery limit, a TTL...) rather than by a worker:
            # the reason is in x-death.
            reason=str(headers.get("reason") or broker_death.get("reason") or "?"),
            detail=str(headers.get("detail", "")),
            original_queue=original_queue(headers, queue_name),
            attempts=headers.get("attempts") if isinstance(headers.get("attempts"), int) else None,
            exc_type=str(headers.get("exc_type", "")),
            exc_message=str(headers.get("exc_message", "")),
            traceback=str(headers.get("traceback", "")),
        )


def first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    return deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}


def original_queue(headers: dict[str, Any], queue_name: str) -> str:
    """Where a dead letter came from: our header, else the broker's, else the queue whose ``.dead`` it is in."""
    found = headers.get("original_queue") or headers.get("x-first-death-queue") or first_death(headers).get("queue")
    return str(found) if found else queue_name


@contextmanager
def _connected(broker: Broker) -> Iterator[Connection]:
    """A confirming connection; a broker that can't be reached is a TaskqError, not a kombu one."""
    connection = broker.connect()
    try:
        connection.ensure_connection(max_retries=1)
    except broker.connection_errors as exc:
        connection.release()
        raise TaskqError(connection_problem(broker.masked_url, exc)) from None
    try:
        yield connection
    finally:
        connection.release()


@contextmanager
def _dead_channel(connection: Connection, queue_name: str) -> Iterator[tuple[Any, int]]:
    """A private channel on ``<queue>.dead`` and its message count; closing it puts back all it didn't ack."""
    channel = connection.channel()
    dead_name = topology.dead_letter_queue_name(queue_name)
    try:
        _, count, _ = channel.queue_declare(queue=dead_name, passive=True)
    except connection.channel_errors:
        raise NoSuchQueue(f"no queue named {dead_name!r} on the broker") from None
    try:
        yield channel, count
    finally:
        try:
            channel.close()
        except (*connection.connection_errors, *connection.channel_errors):
            pass  # closed by the broker or the network: the messages went back all the same


def _take(channel: Any, queue_name: str, count: int) -> Iterator[Any]:
    """Up to ``count`` messages, unacked: never loops over messages dead-lettered meanwhile."""
    dead_name = topology.dead_letter_queue_name(queue_name)
    for _ in range(count):
        message = channel.basic_get(queue=dead_name, no_ack=False)
        if message is None:
            return
        yield message


def list_dead(broker: Broker, queue_name: str, limit: int | None = None) -> tuple[int, list[DeadLetter]]:
    """(total count, the first ``limit`` dead letters), leaving the queue exactly as it was."""
    with _connected(broker) as connection:
        return peek(connection, queue_name, limit)


def peek(connection: Connection, queue_name: str, limit: int | None = None) -> tuple[int, list[DeadLetter]]:
    """``list_dead`` on a connection the caller owns (the dashboard keeps one open)."""
    with _dead_channel(connection, queue_name) as (channel, count):
        wanted = count if limit is None else min(limit, count)
        return count, [DeadLetter.from_message(m, queue_name) for m in _take(channel, queue_name, wanted)]


def newest(connection: Connection, queue_name: str, limit: int) -> tuple[int, list[Any]]:
    """(total count, the last ``limit`` messages as received), leaving the queue exactly as it was.

    AMQP reads a queue from its head only, so this reads every message (unacked) to keep the
    last ones: its cost grows with the queue. The dashboard shows the newest failures.
    """
    with _dead_channel(connection, queue_name) as (channel, count):
        return count, list(collections.deque(_take(channel, queue_name, count), maxlen=limit))


def replay(broker: Broker, queue_name: str, task_id: str | None = None) -> list[DeadLetter]:
    """Send dead letters back to their original queue (one by task id, or all); returns those sent.

    Each copy starts afresh: reason headers removed and ``attempts`` back to 0, so the
    task gets its full retry budget again.
    """
    replayed: list[DeadLetter] = []
    with _connected(broker) as connection, _dead_channel(connection, queue_name) as (channel, count):
        for message in _take(channel, queue_name, count):
            letter = DeadLetter.from_message(message, queue_name)
            if task_id is not None and letter.task_id != task_id:
                continue  # put back when the channel closes, in its place
            properties = copies.carried_properties(message.properties)
            try:
                # mandatory: if the original queue is gone the broker returns the copy
                # (py-amqp raises) instead of dropping it; the dead letter then stays.
                publish_on(
                    connection,
                    message.body,
                    routing_key=letter.original_queue,
                    headers=copies.replay_headers(message.headers),
                    content_type=message.properties.get("content_type") or "application/octet-stream",
                    content_encoding=message.properties.get("content_encoding") or "binary",
                    mandatory=True,
                    **properties,
                )
            except (*connection.connection_errors, *connection.channel_errors) as exc:
                raise TaskqError(
                    f"could not replay {letter.task_id} to {letter.original_queue!r} ({type(exc).__name__}: {exc}); "
                    f"it stays in {topology.dead_letter_queue_name(queue_name)}; "
                    f"{len(replayed)} replayed before it"
                ) from None
            channel.basic_ack(message.delivery_tag)
            replayed.append(letter)
            if task_id is not None:
                break
    return replayed


def count_dead(broker: Broker, queue_name: str) -> int:
    """How many messages ``<queue>.dead`` holds: what an operator confirms before a purge."""
    with _connected(broker) as connection, _dead_channel(connection, queue_name) as (_, total):
        return total


def purge(broker: Broker, queue_name: str) -> int:
    """Delete every message in ``<queue>.dead``; returns how many there were."""
    with _connected(broker) as connection, _dead_channel(connection, queue_name) as (channel, _):
        return channel.queue_purge(topology.dead_letter_queue_name(queue_name)) or 0
