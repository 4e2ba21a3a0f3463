"""Delayed delivery done by the broker: a cascade of TTL queues, never a worker holding a message.

Why a cascade: RabbitMQ only expires per-message TTLs at the head of a queue, so one
delay queue holding different delays would release a short delay only after the long
one in front of it. A queue per distinct delay avoids that but grows without bound
(every jittered backoff is a new delay). Instead, as kombu's native delayed delivery
does (and NServiceBus before it), a delay is written in binary, one routing-key word
per bit, most significant first, followed by the target queue's name::

    0.0. ... .1.0.1.orders          (5 ms, then to queue "orders")

Level ``k`` is a topic exchange plus a queue whose every message lives exactly 2**k ms.
A message whose bit ``k`` is 1 is routed into that queue and dead-letters, after the
TTL, into level ``k-1``'s exchange; a 0 bit skips the queue through an
exchange-to-exchange binding. All messages in one level queue share one TTL, so they
expire in the order they arrived: no head-of-line blocking. After level 0 the message
reaches the delivery exchange, to which every work queue is bound by its own name
behind exactly ``LEVELS`` wildcard words (so ``orders`` never matches ``x.orders``).

Unlike kombu's version (seconds, 28 levels, topic exchanges only, names fixed to
Celery), the unit here is one millisecond, so a 0.2 s backoff is 0.2 s; the work queues
stay on the default exchange, bound additionally to the delivery exchange. Delays
longer than the cascade's ~49 days are sent as far as it goes: the message carries its
absolute ``eta`` header and a worker receiving it early sends it round again.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from kombu import Exchange, Queue
from kombu.abstract import MaybeChannelBound

from taskq import settings

LEVELS = 32  # bits of milliseconds: up to 2**32 - 1 ms, about 49.7 days per trip
MAX_DELAY_MS: int = 2**LEVELS - 1  # annotated: typeshed types int ** int as Any (a negative power is a float)
EARLY_TOLERANCE = settings.ETA_EARLY_TOLERANCE


def prefix(queue_type: str) -> str:
    """Classic and quorum cascades have different queue arguments, so different names."""
    return "taskq.delay" if queue_type == "classic" else f"taskq.delay.{queue_type}"


def level_name(level: int, queue_type: str = "classic") -> str:
    return f"{prefix(queue_type)}.{level:02d}"


def delivery_exchange_name(queue_type: str = "classic") -> str:
    return f"{prefix(queue_type)}.deliver"


def delivery_exchange(queue_type: str = "classic") -> Exchange:
    return Exchange(delivery_exchange_name(queue_type), type="topic", durable=True)


def delivery_binding_key(queue_name: str) -> str:
    """The key binding a work queue to the delivery exchange: LEVELS wildcards, then its name."""
    return "*." * LEVELS + queue_name


def check_queue_name(queue_name: str) -> str | None:
    """Why a queue can't receive delayed messages, or None if it can."""
    words = queue_name.split(".")
    if any(word in ("*", "#") or not word for word in words):
        return f"queue name {queue_name!r} has an empty, '*' or '#' word, which topic routing would misread"
    if len(delivery_binding_key(queue_name)) > 255:
        return f"queue name {queue_name!r} is too long for a delay routing key (at most {255 - 2 * LEVELS} characters)"
    return None


def eta_from(
    countdown: float | None = None, eta: dt.datetime | None = None, now: float | None = None
) -> float | None:
    """The absolute epoch time a task may run, from ``countdown`` seconds or an aware ``eta``."""
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if eta is not None:
        if eta.tzinfo is None:
            raise ValueError("eta must be a timezone-aware datetime")
        return eta.timestamp()
    if countdown is not None:
        if countdown < 0:
            raise ValueError("countdown must not be negative")
        return (now if now is not None else time.time()) + float(countdown)
    return None


def delay_ms(eta: float | None, now: float | None = None) -> int:
    """Milliseconds still to wait until ``eta``, rounded up (never early), capped to one trip."""
    if eta is None:
        return 0
    remaining = eta - (now if now is not None else time.time())
    if remaining <= 0:
        return 0
    if remaining * 1000 >= MAX_DELAY_MS:  # also an eta of 1e308, whose ms are inf: ceil would raise
        return MAX_DELAY_MS
    return math.ceil(remaining * 1000)


def routing_key(milliseconds: int, queue_name: str) -> str:
    """The routing key that carries a message ``milliseconds`` through the cascade to ``queue_name``."""
    if not 0 < milliseconds <= MAX_DELAY_MS:
        raise ValueError(f"delay must be 1..{MAX_DELAY_MS} ms, got {milliseconds}")
    return ".".join(format(milliseconds, f"0{LEVELS}b")) + "." + queue_name


def entry_exchange_name(queue_type: str = "classic") -> str:
    """Delayed messages are published here: the top level, which every bit pattern passes."""
    return level_name(LEVELS - 1, queue_type)


def route(queue_name: str, eta: float | None, queue_type: str = "classic", now: float | None = None) -> tuple[str, str, list[DelayTopology]]:
    """Where to publish a message for ``queue_name`` that may run at ``eta``.

    Returns (exchange, routing key, entities to declare first): the queue itself on the
    default exchange when nothing is left to wait, else the cascade's entry.
    """
    milliseconds = delay_ms(eta, now)
    if not milliseconds:
        return "", queue_name, []
    return entry_exchange_name(queue_type), routing_key(milliseconds, queue_name), [DelayTopology(queue_type)]


class DelayTopology(MaybeChannelBound):
    """The whole cascade as one kombu entity, so ``maybe_declare`` declares it once per connection.

    Quorum cascades dead-letter ``at-least-once`` (RabbitMQ 3.10+): the broker keeps a
    message until the next level confirms it, instead of dropping it if routing fails
    at that instant.
    """

    can_cache_declaration = True

    # channel: a py-amqp Channel, or kombu's virtual one on the embedded broker; the two share
    # no base class, and kombu's entities take either untyped, so it is Any here too.
    def __init__(self, queue_type: str = "classic", channel: Any = None) -> None:
        super().__init__()
        self.queue_type = queue_type
        self.name = prefix(queue_type)  # kombu's maybe_declare copies ``name`` back to the original
        self.maybe_bind(channel)

    def __copy__(self) -> DelayTopology:
        return DelayTopology(self.queue_type)

    def __hash__(self) -> int:
        return hash(("taskq.DelayTopology", self.queue_type))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DelayTopology) and other.queue_type == self.queue_type

    def queue_arguments(self, level: int) -> dict[str, int | str]:
        next_exchange = level_name(level - 1, self.queue_type) if level else delivery_exchange_name(self.queue_type)
        arguments: dict[str, int | str] = {"x-message-ttl": 2**level, "x-dead-letter-exchange": next_exchange}
        if self.queue_type == "quorum":
            arguments.update(
                {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
            )
        return arguments

    def declare(self, nowait: bool = False, channel: Any = None) -> None:
        channel = channel or self.channel
        delivery_exchange(self.queue_type).declare(channel=channel)
        # Lowest level first, so each queue's dead-letter target already exists.
        for level in range(LEVELS):
            name = level_name(level, self.queue_type)
            skipped_words = "*." * (LEVELS - 1 - level)
            exchange = Exchange(name, type="topic", durable=True)
            exchange.declare(channel=channel)
            queue = Queue(name, exchange=exchange, routing_key=skipped_words + "1.#", durable=True,
                          queue_arguments=self.queue_arguments(level))
            queue.declare(channel=channel)
            next_exchange = level_name(level - 1, self.queue_type) if level else delivery_exchange_name(self.queue_type)
            channel.exchange_bind(destination=next_exchange, source=name, routing_key=skipped_words + "0.#")
