"""Listening on a broadcast exchange: one private, bounded queue per listener.

Used by ``taskq logs``, ``taskq events``, ``taskq status`` and the dashboard; ``follow`` keeps
one listening through broker outages (taskq.consumer_loop). Each listener declares its
own exclusive auto-delete queue, so two listeners each get every message, and nothing is
kept once the last one leaves. The queue is bounded with ``drop-head``: a listener that
falls behind loses its oldest lines; the workers never notice.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from kombu import Consumer, Exchange

from taskq import consumer_loop, settings, topology

if TYPE_CHECKING:
    from kombu import Connection

    from taskq.broker import Broker

DEFAULT_MAX_LENGTH = settings.LISTENER_MAX_LENGTH
READ_SLICE = 0.2  # seconds a listener blocks reading before it looks at its stop flag again


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

    def connect(self) -> Connection:
        """A new, unconnected connection for this listener (its heartbeats keep an idle one alive)."""
        return self.broker.connect(heartbeat=settings.LISTENER_HEARTBEAT)

    def run(
        self,
        on_message: Callable[[Any], None],
        *,
        should_stop: Callable[[], bool],
        on_ready: Callable[[str], None] | None = None,
        duration: float | None = None,
    ) -> None:
        """Listen on one connection, no reconnecting (``taskq status`` listens for a few seconds)."""
        connection = self.connect()
        try:
            self.consume(connection, on_message, should_stop=should_stop, on_ready=on_ready, duration=duration)
        except BaseException:
            connection.collect()
            raise
        consumer_loop.release(connection)

    def consume(
        self,
        connection: Connection,
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
        channel = connection.channel()
        self.exchange(channel).declare()
        queue = topology.subscriber_queue(self.exchange, self.binding_keys, max_length=self.max_length)(channel)
        queue.declare()
        self.queue_name = queue.name

        def deliver(message: Any) -> None:
            on_message(message)
            message.ack()

        consumer = Consumer(channel, queues=[queue], on_message=deliver, prefetch_count=settings.LISTENER_PREFETCH, auto_declare=False)
        consumer.consume()
        if on_ready is not None:
            on_ready(queue.name)
        while not should_stop():
            timeout = READ_SLICE if deadline is None else min(READ_SLICE, deadline - time.monotonic())
            if timeout <= 0:
                break
            try:
                connection.drain_events(timeout=timeout)
            except socket.timeout:
                connection.heartbeat_check()


class StopFlag:
    """Set by SIGINT or SIGTERM, so a listener finishes its loop and says its summary."""

    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped


def follow(
    subscription: Subscription,
    on_message: Callable[[Any], None],
    should_stop: Callable[[], bool],
    *,
    on_ready: Callable[[str], None],
    on_reconnected: Callable[[str], None],
    on_lost: Callable[[BaseException], None],
) -> None:
    """Listen until ``should_stop()``, through broker outages.

    A broker unreachable at the start raises (one of the broker's ``connection_errors``):
    likely a wrong URL. Once listening, a lost connection is re-made with backoff, and
    ``on_lost`` hears of it once per outage: a follower should outlive a broker restart.
    The listener's queue went with the connection, so what was sent meanwhile is missed
    (``taskq logs`` counts those lines by their numbers).
    """
    listening = False
    outage = False  # said once per outage, not per try
    returned = False

    def ready(queue: str) -> None:
        nonlocal listening, outage
        (on_reconnected if listening else on_ready)(queue)
        listening, outage = True, False

    def consume(connection: Connection) -> None:
        nonlocal returned
        subscription.consume(connection, on_message, should_stop=should_stop, on_ready=ready)
        returned = True

    def lost(event: consumer_loop.Lost) -> None:
        nonlocal outage
        if not listening:
            raise event.error
        if not outage:
            on_lost(event.error)
        outage = True

    consumer_loop.run(subscription.connect, consume, errors=subscription.broker.connection_errors,
                      should_stop=lambda: returned or should_stop(), on_lost=lost)
