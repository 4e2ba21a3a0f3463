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
  so a waiting consumer wakes at once and an idle one costs one poll a second.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import select
import socket
import sys
import threading
import time
from queue import Empty
from typing import Any
from urllib.parse import unquote

from amqp import exceptions as amqp_errors
from amqp.protocol import queue_declare_ok_t
from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.utils.json import dumps, loads
from kombu.utils.uuid import uuid

from taskq.embedded import default_database_path
from taskq.embedded.store import (
    EXCHANGE_TYPES,
    BrokerBusyError,
    BrokerStore,
    BrokerUnavailableError,
    Delivery,
    EmbeddedBrokerError,
    current_process,
)

log = logging.getLogger("taskq.embedded")

#: Numbers channels and connections within a process; with the process identity they
#: name the holder of a reservation, a consumer or an exclusive queue.
_serials = itertools.count(1)

#: How often any connection looks for rows held by dead processes (and the longest a
#: waiting consumer sleeps without being poked).
REAP_EVERY_SECONDS = 1.0


class QueueNotFound(EmbeddedBrokerError, amqp_errors.NotFound):
    """Same class of error RabbitMQ gives (404), so callers catch it the same way."""


class ExchangeNotFound(EmbeddedBrokerError, amqp_errors.NotFound):
    """Publishing or binding to an exchange nobody declared (RabbitMQ: 404)."""


class QueueLocked(EmbeddedBrokerError, amqp_errors.ResourceLocked):
    """The queue is exclusive to another connection (RabbitMQ: 405)."""


class ExchangeMismatch(EmbeddedBrokerError, amqp_errors.PreconditionFailed):
    """Redeclared with another type or flags; RabbitMQ refuses that too (406)."""


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


class WakeSocket:
    """A connection's doorbell: publishers ring it after committing to a watched queue.

    Datagrams to an abstract Unix address need no file and vanish with the process; a
    ring while nobody waits stays queued in the socket, so none is lost between "queue
    was empty" and "start waiting". Off Linux there is no bell and we poll instead.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.address: str | None = None
        self._sock: socket.socket | None = None
        self._idle_poll = 0.001
        if sys.platform.startswith("linux"):
            address = f"taskq-embedded-{self.pid}-{secrets.token_hex(8)}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind("\0" + address)
            except OSError:  # a sandbox without Unix sockets: poll instead
                sock.close()
                return
            sock.setblocking(False)
            # poll, not select: select fails on descriptors above 1023 in a busy process
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
            self._sock, self.address = sock, address

    def clear(self) -> None:
        if self._sock is None:
            return
        try:
            while True:
                self._sock.recv(64)
        except (BlockingIOError, InterruptedError):
            pass

    def wait(self, seconds: float) -> None:
        if self._sock is not None:
            self._poller.poll(max(seconds, 0) * 1000)
        else:
            time.sleep(max(min(seconds, self._idle_poll), 0))
            self._idle_poll = min(self._idle_poll * 2, 0.05)

    def delivered(self) -> None:
        self._idle_poll = 0.001

    def ring(self, addresses: list[str]) -> None:
        if self._sock is None:
            return
        for address in addresses:
            try:
                self._sock.sendto(b"!", "\0" + address)
            except OSError:  # full (it will wake anyway) or gone (its owner died)
                pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


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
        else:  # no dead-lettering here: a rejected message is dropped
            self.channel.store_ack(delivery_tag)
        self._quick_ack(delivery_tag)

    def restore_unacked(self) -> list:
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
            self._delivered.restored = True


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
        arguments: dict | None = None,
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

    def queue_bind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict | None = None,
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
        arguments: dict | None = None,
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

    def prepare_queue_arguments(self, arguments: dict, **kwargs: Any) -> dict:
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def queue_declare(
        self,
        queue: str | None = None,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict | None = None,
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

    def basic_publish(self, message: dict, exchange: str, routing_key: str, **kwargs: Any) -> None:
        self._inplace_augment_message(message, exchange, routing_key)
        exchange_type = ""
        if exchange:
            stored = self.store.get_exchange(exchange)
            if stored is None:
                raise ExchangeNotFound(f"NOT_FOUND - no exchange {exchange!r}", None, "Basic.publish")
            exchange_type = stored.type
        priority = message["properties"].get("priority") or 0
        queues = self.store.publish(exchange or "", exchange_type, routing_key or "", dumps(message), priority)
        self.transport.wake(queues)

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
        message = self.Message(self._payload(delivery), channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict:
        delivery = self._take(queue, queue in self._no_ack_queues)
        if delivery is None:
            raise Empty()
        return self._payload(delivery)

    def _take(self, queue: str, no_ack: bool) -> Delivery | None:
        if no_ack:
            return self.store.remove_next(queue)
        return self.store.reserve_next(queue, self.owner, self.serial)

    def _payload(self, delivery: Delivery) -> dict:
        payload = loads(delivery.payload)
        properties = payload["properties"]
        # The tag names the row, so ack needs no lookup; the counter keeps a tag unique
        # when the same row comes back to this channel after a requeue.
        properties["delivery_tag"] = f"{delivery.row_id}.{next(self._deliveries)}"
        properties.setdefault("delivery_info", {})["redelivered"] = delivery.redelivered
        if delivery.redelivered:
            payload["redelivered"] = True
        return payload

    # -- what the QoS calls --------------------------------------------------------------

    def store_ack(self, delivery_tag: str) -> None:
        if self._is_mine():
            self.store.ack(_row_id(delivery_tag), self.owner, self.serial)

    def store_release(self, delivery_tag: str) -> None:
        if self._is_mine():
            self.transport.wake(self.store.release([_row_id(delivery_tag)], self.owner, self.serial))

    def store_release_all(self) -> None:
        if self._is_mine():
            self.transport.wake(self.store.release_channel(self.owner, self.serial))

    def close(self) -> None:
        was_open = not self.closed
        super().close()  # cancels consumers and hands back unacked messages via the QoS
        if was_open and self._is_mine():
            # Also rows reserved but never handed to the QoS (a callback that raised).
            self.store_release_all()
            self.store.remove_consumers(self.owner, self.serial)


def _row_id(delivery_tag: str) -> int:
    return int(str(delivery_tag).split(".", 1)[0])


class Transport(virtual.Transport):
    Channel = Channel

    driver_type = "sqlite"
    driver_name = "sqlite3"
    can_parse_url = True  # kombu hands us "sqlite:///path" untouched
    polling_interval = REAP_EVERY_SECONDS
    implements = virtual.Transport.implements.extend(exchange_type=frozenset(["direct", "topic", "fanout"]))
    #: So kombu's retry logic and taskq's reconnect loop treat an unusable file like a
    #: broker that is down.
    connection_errors = (*virtual.Transport.connection_errors, BrokerUnavailableError, BrokerBusyError)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.path = database_path(client.hostname)
        self.store = BrokerStore(self.path)
        self.owner = current_process()
        self.serial = next(_serials)
        self._bell: WakeSocket | None = None
        self._draining_thread: int | None = None
        self._next_reap = 0.0

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
        return super().establish_connection()

    def wake(self, queues: list[str]) -> None:
        if queues:
            self.bell.ring(self.store.wake_addresses(queues))

    def nudge_draining_thread(self) -> None:
        """Called on ack; rings our own bell only when another thread may be asleep in it."""
        draining = self._draining_thread
        if draining is not None and draining != threading.get_ident() and self._bell is not None:
            self._bell.ring([self._bell.address] if self._bell.address else [])

    def reap_dead_owners(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self._next_reap:
            self._next_reap = now + REAP_EVERY_SECONDS
            self.wake(self.store.reap_dead_owners())

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        bell = self.bell
        self._draining_thread = threading.get_ident()
        while True:
            bell.clear()  # before polling: a ring after this point ends the wait below
            self.reap_dead_owners()
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                bell.delivered()
                return
            except Empty:
                pass
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise socket.timeout()
            bell.wait(self.polling_interval if deadline is None else min(self.polling_interval, deadline - now))

    def _reject_inbound_message(self, raw_message: dict) -> None:
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
