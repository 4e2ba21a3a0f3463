"""Listening on a broadcast exchange: one private, bounded queue per listener.

Used by ``taskq logs``, ``taskq events`` and ``taskq status``. Each listener declares its
own exclusive auto-delete queue, so two listeners each get every message, and nothing is
kept once the last one leaves. The queue is bounded with ``drop-head``: a listener that
falls behind loses its oldest lines; the workers never notice.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from kombu import Consumer, Exchange

from taskq import topology

if TYPE_CHECKING:
    from taskq.broker import Broker

DEFAULT_MAX_LENGTH = 10_000
PREFETCH = 100  # acked one by one: a stopped listener holds at most this many besides its queue


def records(message: Any) -> Iterator[dict[str, Any]]:
    """The records of one broadcast message: JSON lines, several per message (workers batch them)."""
    for line in message.body.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # not ours, or cut: skip the line, keep the rest
            continue
        if isinstance(record, dict):
            yield record


@dataclass
class GapCounter:
    """Counts log records a listener never saw, from each worker process's sequence numbers."""

    last: dict[tuple[str, int], int] = field(default_factory=dict)
    missed: int = 0

    def see(self, source: tuple[str, int], seq: Any) -> int:
        """Record a sequence number; returns how many records before it were missed."""
        if not isinstance(seq, int):
            return 0
        previous = self.last.get(source)
        self.last[source] = seq
        if previous is None or seq <= previous:  # first record from it, or the process restarted
            return 0
        gap = seq - previous - 1
        self.missed += gap
        return gap


class Subscription:
    """One listener's queue on ``exchange``, bound with ``binding_keys``, read until told to stop."""

    def __init__(
        self,
        broker: Broker,
        exchange: Exchange,
        binding_keys: list[str],
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        self.broker = broker
        self.exchange = exchange
        self.binding_keys = binding_keys
        self.max_length = max_length
        self.queue_name: str | None = None

    def run(
        self,
        on_message: Callable[[Any], None],
        *,
        should_stop: Callable[[], bool],
        on_ready: Callable[[str], None] | None = None,
        duration: float | None = None,
    ) -> None:
        """Deliver each message (a kombu Message) to ``on_message``, then ack it.

        Returns when ``should_stop()`` is true or ``duration`` seconds have passed. Acking
        after the callback, with a bounded prefetch, is what makes the broker-side bound
        real: a listener that stops reading stops receiving, and its queue drops the oldest.
        """
        deadline = None if duration is None else time.monotonic() + duration
        connection = self.broker.connect(heartbeat=30)
        try:
            channel = connection.channel()
            self.exchange(channel).declare()
            queue = topology.subscriber_queue(self.exchange, self.binding_keys, max_length=self.max_length)(channel)
            queue.declare()
            self.queue_name = queue.name

            def deliver(message: Any) -> None:
                on_message(message)
                message.ack()

            consumer = Consumer(channel, queues=[queue], on_message=deliver, prefetch_count=PREFETCH, auto_declare=False)
            consumer.consume()
            if on_ready is not None:
                on_ready(queue.name)
            while not should_stop():
                timeout = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if timeout <= 0:
                    break
                try:
                    connection.drain_events(timeout=timeout)
                except socket.timeout:
                    connection.heartbeat_check()
        finally:
            try:
                connection.release()
            except Exception:  # already broken: just drop it
                connection.collect()
