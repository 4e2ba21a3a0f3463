"""kombu transport for the embedded broker: ``taskq+sqlite:///path/to/broker.db``.

Built on kombu's virtual transport, so taskq talks plain kombu and cannot tell this from
RabbitMQ. What the stock virtual transports get wrong for us, and this one does not:

* bindings live in process memory there, so a fanout published in one process never
  reaches a queue bound in another: here exchanges, bindings and consumers are rows in
  the shared database (see ``store.py``);
* unacked messages live in process memory there, so a SIGKILLed worker loses them:
  here they stay in the database, reserved by their owner, until acked;
* consumers poll once a second there: here each connection has a Unix datagram socket
  whose address is stored with its consumers, and a publisher pokes it after commit,
  so a waiting consumer wakes at once and an idle one costs one poll a second;
* no TTL, dead-lettering, max-length or exchange-to-exchange bindings there: here they
  work as on RabbitMQ (see ``deadletter.py``), since taskq's delays are built from them.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from queue import Empty
from typing import Any
from urllib.parse import unquote

from amqp import exceptions as amqp_errors
from amqp.protocol import queue_declare_ok_t
from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.utils.scheduling import FairCycle
from kombu.utils.json import dumps, loads
from kombu.utils.uuid import uuid

from taskq.embedded import brokerfile, deadletter, default_database_path
from taskq.embedded.processes import current_process
from taskq.embedded.routing import EXCHANGE_TYPES
from taskq.embedded.store import (
    BrokerBusyError,
    BrokerStore,
    BrokerUnavailableError,
    Delivery,
    EmbeddedBrokerError,
)
from taskq.embedded.wake import TIMER, WakeSocket

log = logging.getLogger("taskq.embedded")

#: Numbers channels and connections within a process; with the process identity they
#: name the holder of a reservation, a consumer or an exclusive queue.
_serials = itertools.count(1)

#: How often any connection looks for rows held by dead processes (and the longest a
#: waiting consumer sleeps without being poked).
REAP_EVERY_SECONDS = 1.0
#: Bounds one call's expiry work, so a drain loop always gets back to delivering.
MOST_PASSES_PER_CALL = 20
#: A connection remembers when the next message anywhere is due and looks in the
#: database only then, when rung with TIMER (someone stored a message due sooner), or
#: after this long in any case (a ring can be lost to a full socket). Without a wake
#: socket nobody can ring, so it looks far more often.
EXPIRY_RECHECK_SECONDS = 1.0
EXPIRY_RECHECK_WITHOUT_BELL_SECONDS = 0.02


class QueueNotFound(EmbeddedBrokerError, amqp_errors.NotFound):
    """Same class of error RabbitMQ gives (404), so callers catch it the same way."""


class ExchangeNotFound(EmbeddedBrokerError, amqp_errors.NotFound):
    """Publishing or binding to an exchange nobody declared (RabbitMQ: 404)."""


class QueueLocked(EmbeddedBrokerError, amqp_errors.ResourceLocked):
    """The queue is exclusive to another connection (RabbitMQ: 405)."""


class ExchangeMismatch(EmbeddedBrokerError, amqp_errors.PreconditionFailed):
    """Redeclared with another type or flags; RabbitMQ refuses that too (406)."""


class PublishRefused(EmbeddedBrokerError, amqp_errors.MessageNacked):
    """A full queue with ``x-overflow: reject-publish`` refused the message; with
    ``confirm_publish`` RabbitMQ nacks it and py-amqp raises MessageNacked, so do we."""


class NoRoute(EmbeddedBrokerError, amqp_errors.ChannelError):
    """A ``mandatory`` message no queue took: RabbitMQ returns it (312 NO_ROUTE) and
    py-amqp raises that return as a ChannelError, so the publisher learns it was lost.
    Named for the AMQP reply, not ``Unroutable``: that is ``taskq.Unroutable``, what the
    publisher (broker.py) turns this wire error into."""


class HeadersNotATable(EmbeddedBrokerError, TypeError):
    """A message's headers must be a table: py-amqp can't even encode anything else for
    RabbitMQ, and a stored one would crash every consumer that receives it."""


class UnsupportedExchangeType(EmbeddedBrokerError, amqp_errors.AMQPNotImplementedError):
    """Only direct, topic and fanout exchanges exist here (no headers exchange)."""


def database_path(hostname: str | None) -> str:
    """The file named by the part of the URL after ``taskq+`` (kombu splits it off).

    ``sqlite:///abs/broker.db`` is absolute, ``sqlite://rel/broker.db`` relative to the
    working folder, and ``sqlite://`` alone means ``$TASKQ_HOME/broker.db``.
    """
    location = hostname or ""
    if location.startswith("sqlite://"):
        location = location[len("sqlite://") :]
    elif location == "localhost":  # kombu's default when the URL names no host
        location = ""
    location = unquote(location.split("?", 1)[0])
    if not location:
        return default_database_path()
    return os.path.abspath(os.path.expanduser(location))


class ReservingQoS(virtual.QoS):
    """Acks, rejects and restores act on the database rows, not on process memory."""

    def ack(self, delivery_tag: str) -> None:
        self.channel.store_ack(delivery_tag)
        super().ack(delivery_tag)
        # An ack from another thread frees a prefetch slot while the consuming thread
        # may be asleep in drain_events: wake it rather than let it sleep a second.
        self.channel.transport.nudge_draining_thread()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel.store_release(delivery_tag)
        else:  # dead-lettered if the queue has x-dead-letter-exchange, else dropped
            self.channel.store_reject(delivery_tag)
        self._quick_ack(delivery_tag)

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:  # kombu's (error, message) pairs
        self._flush()
        self._delivered.clear()
        self.channel.store_release_all()
        return []

    def restore_unacked_once(self, stderr: Any = None) -> None:
        self._on_collect.cancel()
        if not self.restore_at_shutdown or not self.channel.do_restore:
            return
        if getattr(self._delivered, "restored", False):
            return
        try:
            self.restore_unacked()
        except Exception:  # at interpreter exit; the next reap returns them anyway
            log.exception("could not hand back unacked messages")
        finally:
            self._delivered.restored = True  # type: ignore[attr-defined]  # kombu's own flag on its OrderedDict


class Channel(virtual.Channel):
    QoS = ReservingQoS
    supports_fanout = True

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        # Kept after close (when self.connection is cleared) so a late restore still works.
        self.transport = connection
        self.store: BrokerStore = connection.store
        self.owner = current_process()
        self.serial = next(_serials)
        self._no_ack_queues: set[str] = set()
        self._deliveries = itertools.count(1)

    def _is_mine(self) -> bool:
        """False in a forked child: the parent's reservations are not ours to touch."""
        return self.owner.pid == os.getpid()

    # -- exchanges and bindings ----------------------------------------------------------

    def exchange_declare(
        self,
        exchange: str | None = None,
        type: str = "direct",
        durable: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        passive: bool = False,
    ) -> None:
        type = type or "direct"
        exchange = exchange or f"amq.{type}"
        if passive:
            if self.store.get_exchange(exchange) is None:
                raise ExchangeNotFound(f"NOT_FOUND - no exchange {exchange!r}", None, "Exchange.declare")
            return
        if type not in EXCHANGE_TYPES:
            raise UnsupportedExchangeType(f"exchange type {type!r} is not supported", None, "Exchange.declare")
        wanted = (type, bool(durable), bool(auto_delete), loads(dumps(arguments or {})))
        stored = self.store.declare_exchange(exchange, type, bool(durable), bool(auto_delete), arguments or {})
        if tuple(stored) != wanted:
            raise ExchangeMismatch(
                f"PRECONDITION_FAILED - exchange {exchange!r} exists as {tuple(stored)}, declared as {wanted}",
                None,
                "Exchange.declare",
            )

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False) -> None:
        self.store.delete_exchange(exchange)

    def exchange_bind(
        self,
        destination: str,
        source: str = "",
        routing_key: str = "",
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Messages routed by ``source`` with a matching key go on to ``destination``."""
        for name in (source, destination):
            if not name or self.store.get_exchange(name) is None:
                raise ExchangeNotFound(f"NOT_FOUND - no exchange {name!r}", None, "Exchange.bind")
        self.store.bind_exchange(source, routing_key or "", destination)

    def exchange_unbind(
        self,
        destination: str,
        source: str = "",
        routing_key: str = "",
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.store.unbind_exchange(source, routing_key or "", destination)

    def queue_bind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        exchange = exchange or "amq.direct"
        if self.store.get_exchange(exchange) is None:
            raise ExchangeNotFound(f"NOT_FOUND - no exchange {exchange!r}", None, "Queue.bind")
        if not self.store.queue_exists(queue):
            raise QueueNotFound(f"NOT_FOUND - no queue {queue!r}", None, "Queue.bind")
        self.store.bind(exchange, routing_key or "", queue)

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.store.unbind(exchange or "amq.direct", routing_key or "", queue)

    def get_table(self, exchange: str) -> list[tuple[str, None, str]]:
        return [(key, None, queue) for _, key, queue in self.store.bindings(exchange)]

    def list_bindings(self) -> list[tuple[str, str, str]]:
        return [(queue, exchange, key) for exchange, key, queue in self.store.bindings()]

    def get_exchanges(self) -> list[str]:
        return self.store.exchange_names()

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        stored = self.store.get_exchange(exchange)
        return self.exchange_types[stored.type if stored else default]

    # -- queues --------------------------------------------------------------------------

    def prepare_queue_arguments(self, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        prepared: dict[str, Any] = to_rabbitmq_queue_arguments(arguments, **kwargs)
        return prepared

    def queue_declare(
        self,
        queue: str | None = None,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        **kwargs: Any,
    ) -> queue_declare_ok_t:
        queue = queue or f"amq.gen-{uuid()}"
        self.transport.reap_dead_owners(force=True)  # so the counts leave out the dead
        if passive:
            if not self.store.queue_exists(queue):
                raise QueueNotFound(f"NOT_FOUND - no queue {queue!r}", None, "Queue.declare")
        else:
            arguments = arguments or {}
            me = (self.owner, self.transport.serial)
            holder = self.store.declare_queue(
                queue,
                durable=bool(durable),
                auto_delete=bool(auto_delete),
                max_priority=int(arguments.get("x-max-priority") or 0),
                arguments=arguments,
                exclusive_to=me if exclusive else None,
            )
            if holder is not None and holder != me:
                raise QueueLocked(
                    f"RESOURCE_LOCKED - queue {queue!r} is exclusive to another connection", None, "Queue.declare"
                )
        return queue_declare_ok_t(queue, self.store.ready_count(queue), self.store.consumer_count(queue))

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> int:
        if if_unused and self.store.consumer_count(queue):
            return 0
        if if_empty and self.store.ready_count(queue):
            return 0
        return self.store.delete_queue(queue)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.store.delete_queue(queue)

    def _purge(self, queue: str) -> int:
        return self.store.purge(queue)

    def _size(self, queue: str) -> int:
        return self.store.ready_count(queue)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self.store.queue_exists(queue)

    # -- publishing ----------------------------------------------------------------------

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> None:
        """A full ``x-overflow: reject-publish`` queue leaves the message out. As on RabbitMQ,
        that raises (MessageNacked) only on a connection with ``confirm_publish``, as taskq
        opens them; without confirms it is silent. Other queues keep their copy either way.
        A ``mandatory`` message that reached no queue at all raises ``NoRoute``."""
        headers = message.get("headers")
        if not isinstance(headers, dict):
            raise HeadersNotATable(f"message headers must be a table (dict), not {type(headers).__name__}")
        self._inplace_augment_message(message, exchange, routing_key)
        if exchange and self.store.get_exchange(exchange) is None:
            raise ExchangeNotFound(f"NOT_FOUND - no exchange {exchange!r}", None, "Basic.publish")
        properties = message["properties"]
        published = self.store.publish(
            exchange or "",
            routing_key or "",
            dumps(message),
            properties.get("priority") or 0,
            _expiration_ms(properties.get("expiration")),
        )
        self.transport.wake(published.queues)
        if published.soonest_due is not None:
            self.transport.announce_due(published.soonest_due)
        if self.store.dead_pending or self.transport.expiry_due():
            self.transport.move_due()  # x-max-length pushed messages out, or time to look
        if published.refused and self.transport.confirm_publish:
            raise PublishRefused(f"queue(s) {', '.join(published.refused)} full (x-overflow: reject-publish)")
        if kwargs.get("mandatory") and not published.queues and not published.refused:
            raise NoRoute(
                f"NO_ROUTE - no queue for {exchange!r} with routing key {routing_key!r}", None, "Basic.publish", 312
            )

    # -- consuming -----------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any) -> str:
        if not self.store.queue_exists(queue):
            raise QueueNotFound(f"NOT_FOUND - no queue {queue!r}", None, "Basic.consume")
        consumer_tag = consumer_tag or f"taskq.ctag-{uuid()}"
        if no_ack:
            self._no_ack_queues.add(queue)
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        self.store.add_consumer(queue, consumer_tag, self.owner, self.serial, self.transport.wake_address)
        return consumer_tag

    def basic_cancel(self, consumer_tag: str) -> None:
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        self._no_ack_queues.discard(queue)
        if self._is_mine():
            self.store.remove_consumers(self.owner, self.serial, consumer_tag)

    def basic_qos(
        self,
        prefetch_size: int = 0,
        prefetch_count: int = 0,
        apply_global: bool = False,
        a_global: bool = False,
        **kwargs: Any,
    ) -> None:
        """Accepts py-amqp's ``a_global`` spelling too, which taskq's worker uses."""
        self.qos.prefetch_count = prefetch_count

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        delivery = self._take(queue, no_ack)
        if delivery is None:
            return None
        message = self.Message(self._payload(delivery, queue), channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        delivery = self._take(queue, queue in self._no_ack_queues)
        if delivery is None:
            raise Empty()
        return self._payload(delivery, queue)

    def _take(self, queue: str, no_ack: bool) -> Delivery | None:
        if no_ack:
            return self.store.remove_next(queue)
        return self.store.reserve_next(queue, self.owner, self.serial)

    def _payload(self, delivery: Delivery, queue: str) -> dict[str, Any]:
        payload: dict[str, Any]
        try:
            payload = loads(delivery.payload)
            properties = payload["properties"]
        except (ValueError, TypeError, KeyError):
            payload = _unreadable_row(delivery, queue)
            properties = payload["properties"]
        # The tag names the row, so ack needs no lookup; the counter keeps a tag unique
        # when the same row comes back to this channel after a requeue.
        properties["delivery_tag"] = f"{delivery.row_id}.{next(self._deliveries)}"
        # py-amqp has these in properties too; code copying a message's properties needs them.
        properties.setdefault("content_type", payload.get("content-type"))
        properties.setdefault("content_encoding", payload.get("content-encoding"))
        properties.setdefault("delivery_info", {})["redelivered"] = delivery.redelivered
        if delivery.redelivered:
            payload["redelivered"] = True
        return payload

    # -- what the QoS calls --------------------------------------------------------------

    def store_ack(self, delivery_tag: str) -> None:
        if self._is_mine():
            self.store.ack(_row_id(delivery_tag), self.owner, self.serial)

    def store_reject(self, delivery_tag: str) -> None:
        if self._is_mine():
            self.store.reject(_row_id(delivery_tag), self.owner, self.serial)
            self.transport.move_due()

    def store_release(self, delivery_tag: str) -> None:
        if self._is_mine():
            self.transport.wake(self.store.release([_row_id(delivery_tag)], self.owner, self.serial))
            self.transport.move_due()  # past x-delivery-limit, a requeue dead-letters

    def store_release_all(self) -> None:
        if self._is_mine():
            self.transport.wake(self.store.release_channel(self.owner, self.serial))
            self.transport.move_due()

    def close(self) -> None:
        was_open = not self.closed
        super().close()  # cancels consumers and hands back unacked messages via the QoS
        if was_open and self._is_mine():
            # Also rows reserved but never handed to the QoS (a callback that raised).
            self.store_release_all()
            self.store.remove_consumers(self.owner, self.serial)


def _unreadable_row(delivery: Delivery, queue: str) -> dict[str, Any]:
    """A stored message whose envelope no longer parses (bytes damaged in the file) is
    handed over as an undecodable body, so the consumer dead-letters it with a reason,
    as it would any malformed message, instead of the drain loop failing on it forever."""
    return {
        "body": delivery.payload,
        "content-type": "application/x-taskq-damaged",
        "content-encoding": "binary",
        "headers": {},
        "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue}},
    }


def _row_id(delivery_tag: str) -> int:
    return int(str(delivery_tag).split(".", 1)[0])


def _expiration_ms(expiration: Any) -> int | None:
    """AMQP's per-message TTL: milliseconds as a string; kombu writes ``str(int(s * 1000))``."""
    if expiration is None or expiration == "":
        return None
    try:
        return max(int(float(expiration)), 0)
    except (TypeError, ValueError):
        return None


class Transport(virtual.Transport):
    Channel = Channel
    cycle: FairCycle  # kombu declares it None at class level; its __init__ always sets one

    driver_type = "sqlite"
    driver_name = "sqlite3"
    can_parse_url = True  # kombu hands us "sqlite:///path" untouched
    polling_interval = REAP_EVERY_SECONDS
    implements = virtual.Transport.implements.extend(exchange_type=frozenset(["direct", "topic", "fanout"]))
    #: So kombu's retry logic and taskq's reconnect loop treat an unusable file like a
    #: broker that is down. (mypy infers kombu's as a one-class tuple from its value: the ignore.)
    connection_errors = (  # type: ignore[assignment]
        *virtual.Transport.connection_errors, BrokerUnavailableError, BrokerBusyError
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.path = database_path(client.hostname)
        self.confirm_publish = bool(client.transport_options.get("confirm_publish"))
        # Here, not at the first query: taskq builds a transport before it forks a worker's
        # children or publishes, so a bad file is refused once, in one line (brokerfile.py).
        brokerfile.ensure(self.path)
        self.store = BrokerStore(self.path)
        self.owner = current_process()
        self.serial = next(_serials)
        self._bell: WakeSocket | None = None
        self._draining_thread: int | None = None
        # Monotonic instants of the last reap and the last look for due messages. Compared as
        # time elapsed in either direction (``_elapsed``), so a clock that jumps (freezegun in a
        # test freezes time.monotonic in every thread, this drain loop's too) counts as time up
        # instead of pushing the next look decades away.
        self._last_reap: float | None = None
        self._last_expiry_check: float | None = None
        self._due_hint: float | None = None  # Unix time the next message anywhere expires

    def driver_version(self) -> str:
        import sqlite3

        return sqlite3.sqlite_version

    @property
    def bell(self) -> WakeSocket:
        if self._bell is None or self._bell.pid != os.getpid():
            self._bell = WakeSocket()
        return self._bell

    @property
    def wake_address(self) -> str | None:
        return self.bell.address

    def establish_connection(self) -> Transport:
        self.reap_dead_owners(force=True)
        self.bell  # noqa: B018 -- bind the socket before any consumer registers
        established: Transport = super().establish_connection()  # kombu's returns self, untyped
        return established

    def wake(self, queues: list[str]) -> None:
        if queues:
            self.bell.ring(self.store.wake_addresses(queues))

    def nudge_draining_thread(self) -> None:
        """Called on ack; rings our own bell only when another thread may be asleep in it."""
        draining = self._draining_thread
        if draining is not None and draining != threading.get_ident() and self._bell is not None:
            self._bell.ring([self._bell.address] if self._bell.address else [])

    def reap_dead_owners(self, force: bool = False) -> None:
        if force or _elapsed(self._last_reap) >= REAP_EVERY_SECONDS:
            self._last_reap = time.monotonic()
            self.store.check_file()
            self.wake(self.store.reap_dead_owners())
            self.move_due()  # a dead owner's message may be past its delivery limit

    def move_due(self) -> float | None:
        """Expire and dead-letter whatever is due, in any queue; return when the next
        message will be due (Unix time), or None if none can expire.

        Any process does this for all queues: nobody consumes a delay queue.
        """
        self._last_expiry_check = time.monotonic()
        for _ in range(MOST_PASSES_PER_CALL):
            due = self._due_hint = self.store.next_due()
            if due is None or due > deadletter.now():
                return due
            moved = self.store.move_due()
            self.wake(sorted(moved.queues))
            if moved.soonest_new_due is not None:
                self.announce_due(moved.soonest_new_due)
        return deadletter.now()

    def expiry_due(self) -> bool:
        """Whether to look for due messages now; cheap, no database."""
        due = self._due_hint
        return (due is not None and deadletter.now() >= due) or self._until_expiry_check() <= 0

    def _until_expiry_check(self) -> float:
        recheck = EXPIRY_RECHECK_SECONDS if self.bell.reliable else EXPIRY_RECHECK_WITHOUT_BELL_SECONDS
        return recheck - _elapsed(self._last_expiry_check)

    def announce_due(self, due: float) -> None:
        """A message expiring at ``due`` was stored: if it is now the first to expire,
        every waiting process may be sleeping past it, so ring them all."""
        first = self.store.next_due()
        if first is not None and due <= first:
            self.bell.ring(self.store.all_wake_addresses(), TIMER)

    # Only timeout, as kombu's virtual Transport (untyped) narrows base Transport's **kwargs too.
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + timeout
        bell = self.bell
        self._draining_thread = threading.get_ident()
        while True:
            # Before looking: a ring after this point ends the wait below.
            timer_rung = bell.clear()
            self.reap_dead_owners()
            if timer_rung or self.expiry_due():
                self.move_due()
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                bell.delivered()
                return
            except Empty:
                pass
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise socket.timeout()
            wait = self.polling_interval if deadline is None else min(self.polling_interval, deadline - now)
            wait = min(wait, max(self._until_expiry_check(), 0.0))
            if self._due_hint is not None:  # wake when the next message anywhere expires
                wait = min(wait, self._due_hint - deadletter.now())
            bell.wait(wait)

    def _reject_inbound_message(self, raw_message: dict[str, Any]) -> None:
        """A message reached a queue whose callback is gone: hand it back at once."""
        row_id = _row_id(raw_message["properties"]["delivery_tag"])
        self.wake(self.store.release([row_id], current_process(), None))

    def close_connection(self, connection: Any) -> None:
        if self.owner.pid != os.getpid():  # a forked child closing what it inherited
            for channel in [*self.channels, *self._avail_channels]:
                if channel.owner.pid == os.getpid():
                    channel.close()
            self._forget()
            return
        super().close_connection(connection)  # closes channels: unacked go back
        self.store.delete_exclusive_queues(self.owner, self.serial)
        self.store.close()
        if self._bell is not None:
            self._bell.close()
            self._bell = None

    def _collect(self, connection: Any) -> None:
        """kombu's close after fork; close_connection already leaves the parent's state alone."""
        self.close_connection(connection)

    def _forget(self) -> None:
        self.channels = []
        self._avail_channels = []
        self._callbacks = {}
        self._bell = None


def _elapsed(since: float | None) -> float:
    """Seconds since a monotonic instant, whichever way the clock moved; infinite if never."""
    return float("inf") if since is None else abs(time.monotonic() - since)
