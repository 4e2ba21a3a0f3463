"""The one module that opens connections and publishes: kombu below, taskq's errors above.

Everything that can go wrong on the wire is turned into ``PublishError`` here, after a
bounded retry, so task code never sees py-amqp's exception classes.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from amqp.exceptions import MessageNacked
from kombu import Connection, Producer, Queue
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from taskq.errors import PublishError
from taskq.message import CONTENT_ENCODING, CONTENT_TYPE

DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672//"
PERSISTENT = 2
TRANSIENT = 1


def resolve_broker_url(explicit: str | None = None) -> str:
    """The broker to use: an explicit URL, else $TASKQ_BROKER_URL, else the local RabbitMQ."""
    return explicit or os.environ.get("TASKQ_BROKER_URL") or DEFAULT_BROKER_URL


def mask_url(url: str) -> str:
    """The URL with its password replaced, safe to print or log."""
    return maybe_sanitize_url(url)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a publish tries before it gives up: bounded, so a caller never hangs forever.

    Each attempt connects once (no hidden kombu retry loop), so the defaults mean: about
    5 to 9 s of sleeping across 7 attempts, enough to ride out a broker restart, then
    PublishError. An unreachable host adds up to kombu's connect timeout (4 s) per attempt.
    """

    max_retries: int = 6
    interval_start: float = 0.2
    interval_max: float = 3.0
    confirm_timeout: float = 10.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: producers don't reconnect in step, and
        the whole retry window stays predictable (full jitter could shrink it to nothing)."""
        ceiling = min(self.interval_max, self.interval_start * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


class Broker:
    """A broker URL plus a small pool of publishing connections shared by the caller's threads.

    Channels are not thread-safe, so each publish borrows a whole connection from the
    pool for its duration.
    """

    def __init__(self, url: str, *, retry: RetryPolicy | None = None, pool_size: int = 10) -> None:
        self.url = url
        self.retry = retry or RetryPolicy()
        self._pool_size = pool_size
        self._pool = None
        self._lock = threading.Lock()
        probe = Connection(url)
        self.is_amqp = probe.transport.driver_type == "amqp"
        # Errors after which the connection is suspect and a retry on a fresh one may work.
        # kombu re-raises a failed (re)connect as its own OperationalError: include it, or
        # a broker that is down escapes the retry as a library error.
        self.connection_errors: tuple[type[BaseException], ...] = (
            *probe.connection_errors,
            *probe.channel_errors,
            OSError,
            OperationalError,
        )

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def connect(self, *, heartbeat: float = 0) -> Connection:
        """A new connection with publisher confirms on; the caller owns it and closes it."""
        return Connection(
            self.url,
            heartbeat=heartbeat,
            # max_retries=0: a (re)connect is tried once; the retry policy is the caller's.
            transport_options={"confirm_publish": True, "max_retries": 0},
        )

    def _connection_pool(self):
        with self._lock:
            if self._pool is None:
                self._pool = self.connect().Pool(limit=self._pool_size)
            return self._pool

    def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = "",
        headers: dict[str, Any] | None = None,
        declare: Iterable[Queue] = (),
        persistent: bool = True,
        **properties: Any,
    ) -> None:
        """Publish and return only once the broker confirmed it; else raise PublishError.

        A nack, a timeout or a broken connection is retried up to ``retry.max_retries``
        times on a fresh connection: the same message may then reach the broker twice,
        which at-least-once delivery allows and the task id makes detectable.
        """
        attempt = 0
        while True:
            try:
                with self._connection_pool().acquire(block=True, timeout=30) as connection:
                    try:
                        publish_on(
                            connection,
                            body,
                            routing_key=routing_key,
                            exchange=exchange,
                            headers=headers,
                            declare=declare,
                            persistent=persistent,
                            confirm_timeout=self.retry.confirm_timeout,
                            **properties,
                        )
                        return
                    except (MessageNacked, *self.connection_errors):
                        # Drop the broken connection; the pool reconnects it on next use.
                        connection.collect()
                        raise
            except (MessageNacked, *self.connection_errors) as exc:
                attempt += 1
                if attempt > self.retry.max_retries:
                    raise PublishError(
                        f"broker at {self.masked_url} did not confirm the publish to "
                        f"{routing_key!r} after {attempt} attempts: {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(self.retry.delay(attempt))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.force_close_all()
                self._pool = None

    def forget_connections_after_fork(self) -> None:
        """A forked child must not touch its parent's sockets: drop them without closing."""
        self._pool = None
        self._lock = threading.Lock()


def publish_on(
    connection: Connection,
    body: bytes,
    *,
    routing_key: str,
    exchange: str = "",
    headers: dict[str, Any] | None = None,
    declare: Iterable[Queue] = (),
    persistent: bool = True,
    confirm_timeout: float | None = 10.0,
    channel: Any = None,
    content_type: str = CONTENT_TYPE,
    content_encoding: str = CONTENT_ENCODING,
    **properties: Any,
) -> None:
    """Publish one message (msgpack unless told otherwise) on a connection the caller owns.

    No retry and no pool: the caller decides what a failure means. With
    ``confirm_publish`` on the connection, py-amqp waits for the broker's ack here.
    """
    producer = Producer(channel or connection.default_channel, auto_declare=False)
    producer.publish(
        body,
        routing_key=routing_key,
        exchange=exchange,
        headers=headers or {},
        declare=list(declare),
        content_type=content_type,
        content_encoding=content_encoding,
        delivery_mode=PERSISTENT if persistent else TRANSIENT,
        retry=False,
        confirm_timeout=confirm_timeout,
        **properties,
    )


def queue_counts(connection: Connection, queue_name: str) -> tuple[int, int]:
    """(messages ready, consumers) for a queue, as the broker reports them; raises if it doesn't exist."""
    channel = connection.channel()
    try:
        _, ready, consumers = channel.queue_declare(queue=queue_name, passive=True)
        return ready, consumers
    finally:
        channel.close()
