"""The one module that opens connections and publishes: kombu below, taskq's errors above.

Everything that can go wrong on the wire is turned into ``PublishError`` here, after a
bounded retry, so task code never sees py-amqp's exception classes.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from amqp.exceptions import AccessRefused, ChannelError, MessageNacked, NotAllowed
from kombu import Connection
from kombu.abstract import MaybeChannelBound
from kombu.common import maybe_declare
from kombu.connection import ConnectionPool
from kombu.exceptions import LimitExceeded, OperationalError
from kombu.utils.url import parse_url

from taskq import embedded, settings
from taskq.backoff import jittered_backoff
from taskq.errors import ConfigurationError, FrameTooLarge, PublishError, Unroutable
from taskq.message import CONTENT_ENCODING, CONTENT_TYPE

NO_ROUTE = 312  # AMQP reply code of a mandatory message that matched no binding
FRAME_OVERHEAD = 8  # bytes of an AMQP frame around its payload: type, channel, size, end octet
CONTENT_HEADER_FIELDS = 12  # bytes of a content header before its properties: class, weight, body size
PERSISTENT = 2
TRANSIENT = 1
# The broker refusing to open a connection: a login it won't take (403 ACCESS_REFUSED), a vhost
# that doesn't exist or isn't ours (530 NOT_ALLOWED). Unlike a broker that is down, waiting
# doesn't mend these: an operator must, so reconnect loops stop on them.
REFUSALS: tuple[type[BaseException], ...] = (AccessRefused, NotAllowed)


def connection_problem(masked_url: str, exc: BaseException) -> str:
    """One line for an operator: a refusal says the broker's own words (the login, the vhost),
    anything else what failed, for it may mend itself."""
    if isinstance(exc, REFUSALS):
        return f"broker at {masked_url} refused the connection: {getattr(exc, 'reply_text', '') or exc}"
    return f"broker at {masked_url}: {type(exc).__name__}: {exc}"


def resolve_broker_url(explicit: str | None = None) -> str:
    """The broker to use: an explicit URL, else $TASKQ_BROKER_URL, else the embedded broker.

    The embedded broker (a SQLite file under ./.taskq, or $TASKQ_HOME) needs no server,
    so taskq works on a fresh machine; point it at RabbitMQ for production.
    """
    return explicit or os.environ.get(settings.BROKER_URL_ENV) or embedded.default_url()


def is_embedded(url: str) -> bool:
    return url.startswith(embedded.SCHEME + "://")


def mask_url(url: str) -> str:
    """The URL with every password replaced by ``**``, safe to print or log.

    Every URL of a ``;`` failover list is masked: kombu's ``maybe_sanitize_url`` masks only
    the first, and the others went to banners, logs and error texts in the clear.
    """
    return ";".join(_mask_password(part) for part in _NEXT_URL.split(url))


_NEXT_URL = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")  # a ';' that starts another URL, not one in a password


def _mask_password(url: str) -> str:
    """Cut the password out by position, without parsing: a password with a raw ``/ ? # @ %``
    makes the URL unparseable (kombu raises, quoting a piece of it), yet it must be printable.

    Everything from the first ``:`` after the scheme to the last ``@`` goes: a raw ``@`` in
    the path would hide the host too, which is better than showing a piece of a password.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    end = rest.rfind("@")
    user, colon, _ = rest[: max(end, 0)].partition(":")
    if not colon:
        return url
    return f"{scheme}{separator}{user}:**{rest[end:]}"


# kombu resolves many more schemes, but taskq needs publisher confirms, TTLs and
# dead-lettering: RabbitMQ's, the embedded broker's, or (in tests) none of them.
SUPPORTED_TRANSPORTS = ("amqp", "amqps", "pyamqp", embedded.SCHEME, "memory")


def check_url(url: str) -> None:
    """Raise ConfigurationError for a URL taskq can't use, naming the problem but not the URL
    (it may hold a password, and a malformed one can't be masked), before kombu raises a
    KeyError, a ValueError or an ImportError from deep inside, or only when failing over."""
    for part in url.split(";"):  # kombu's failover list
        try:
            transport = parse_url(part)["transport"] if "://" in part else "amqp"  # kombu's default
        except ValueError:  # e.g. a port that isn't a number
            raise unparseable_url(url) from None
        if transport not in SUPPORTED_TRANSPORTS:
            raise ConfigurationError(
                f"unsupported broker transport {transport!r}; taskq supports amqp:// or amqps:// (RabbitMQ), "
                f"{embedded.SCHEME}:// (the embedded broker) and memory:// (tests)"
            )


def unparseable_url(url: str) -> ConfigurationError:
    """The error for a URL kombu can't parse. Its own ValueError quotes the piece it choked on,
    which may be a piece of the password (a raw ``/`` ends the host part early)."""
    return ConfigurationError(
        f"the broker URL {mask_url(url)} can't be parsed (a port that isn't a number?); "
        "URL-encode / ? # @ % in the password (%2F %3F %23 %40 %25)"
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a send tries before it gives up: bounded, so a caller never hangs forever.

    Each attempt connects once (no hidden kombu retry loop), so the defaults mean: about
    5 to 9 s of sleeping across 7 attempts, enough to ride out a broker restart, then
    PublishError. ``deadline`` bounds the whole send, attempts and pauses together: on a
    silent network nothing fails fast, and without it each attempt would wait out its
    own connect and confirm timeouts in turn.
    """

    max_retries: int = settings.PUBLISH_MAX_RETRIES
    interval_start: float = settings.PUBLISH_INTERVAL_START
    interval_max: float = settings.PUBLISH_INTERVAL_MAX
    deadline: float = settings.PUBLISH_DEADLINE  # seconds for one send, all of its steps and attempts
    connect_timeout: float = settings.PUBLISH_CONNECT_TIMEOUT  # one attempt's TCP connect and AMQP handshake
    confirm_timeout: float = settings.PUBLISH_CONFIRM_TIMEOUT

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (from 1): jittered so producers
        don't reconnect in step, yet the whole retry window stays predictable."""
        return jittered_backoff(attempt - 1, first=self.interval_start, cap=self.interval_max)


class Budget:
    """One send's allowance of attempts and time, shared by all its steps.

    A ``.delay()`` may open the reply listener and then publish; each step may need a
    reconnect. Drawing both from one budget keeps the promise about the send as a whole:
    ``max_retries`` attempts with backoff, and never past ``deadline``, wherever the
    outage hits.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.attempts = 0

    def remaining(self) -> float:
        return self.started + self.policy.deadline - time.monotonic()

    def timeout(self, preferred: float) -> float:
        """How long one wait of this attempt may block: ``preferred``, cut to what is left."""
        return max(min(preferred, self.remaining()), MIN_WAIT)

    def retry_or_raise(self, exc: BaseException, failure: str) -> None:
        """After a failed attempt: pause before the next one, or raise PublishError saying
        ``failure`` if attempts or time ran out (a pause past the deadline would be wasted)."""
        self.attempts += 1
        pause = self.policy.delay(self.attempts)
        if self.attempts > self.policy.max_retries or pause >= self.remaining():
            raise PublishError(
                f"{failure} after {self.attempts} attempts in {time.monotonic() - self.started:.1f} s: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        time.sleep(pause)


MIN_WAIT = 0.05  # seconds: a wait of 0 would mean "don't block at all" to a socket, not "no time left"


@dataclass(frozen=True)
class Outgoing:
    """One message of a bulk publish: body, routing key, headers and AMQP properties."""

    body: bytes
    routing_key: str
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


CONFIRM_WINDOW = settings.PUBLISH_CONFIRM_WINDOW
POOL_WAIT = settings.PUBLISH_POOL_WAIT


class Broker:
    """A broker URL plus a small pool of publishing connections shared by the caller's threads.

    Channels are not thread-safe, so each publish borrows a whole connection from the
    pool for its duration.
    """

    def __init__(self, url: str, *, retry: RetryPolicy | None = None, pool_size: int = 10) -> None:
        check_url(url)
        self.url = url
        self.retry = retry or RetryPolicy()
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        try:
            probe = Connection(url)
        except ValueError:
            raise unparseable_url(url) from None
        self.driver_type: str = probe.transport.driver_type
        # Errors after which the connection is suspect and a retry on a fresh one may work.
        self.connection_errors: tuple[type[BaseException], ...] = (
            *probe.connection_errors,
            *probe.channel_errors,
            OperationalError,  # kombu's wrapper for a failed (re)connect
            OSError,
        )

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def budget(self) -> Budget:
        """A fresh allowance for one send, to share between its steps."""
        return Budget(self.retry)

    def connect(self, *, heartbeat: float = 0, bounded: bool = False, connect_timeout: float | None = None) -> Connection:
        """A new connection with publisher confirms on; the caller owns it and closes it.

        ``bounded``: no read or write on it blocks longer than the retry deadline, even the
        ones py-amqp gives no timeout (a declaration, opening a channel, closing): over a
        silent network they would wait forever.
        """
        # max_retries=0: a (re)connect is tried once; the retry policy is the caller's.
        options: dict[str, Any] = {"confirm_publish": True, "max_retries": 0}
        if self.driver_type == "memory":
            # kombu's in-memory transport polls its queues, once a second by default.
            options["polling_interval"] = 0.005
        if bounded and self.driver_type == "amqp":
            options.update(read_timeout=self.retry.deadline, write_timeout=self.retry.deadline)
        return Connection(
            self.url,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout or self.retry.connect_timeout,
            transport_options=options,
        )

    def _connection_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = self.connect(bounded=True).Pool(limit=self._pool_size)
            return self._pool

    def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = "",
        headers: dict[str, Any] | None = None,
        declare: Iterable[MaybeChannelBound] = (),
        persistent: bool = True,
        budget: Budget | None = None,
        **properties: Any,
    ) -> None:
        """Publish and return only once the broker confirmed it; else raise PublishError.

        A nack, a timeout or a broken connection is retried on a fresh connection within
        ``budget`` (a new one unless the caller shares its own): the same message may then
        reach the broker twice, which at-least-once delivery allows and the task id makes
        detectable.
        """
        budget = budget or self.budget()
        while True:
            try:
                with self._connection_pool().acquire(block=True, timeout=budget.timeout(POOL_WAIT)) as connection:
                    connection.connect_timeout = budget.timeout(self.retry.connect_timeout)  # used if it reconnects
                    try:
                        publish_on(
                            connection,
                            body,
                            routing_key=routing_key,
                            exchange=exchange,
                            headers=headers,
                            declare=declare,
                            persistent=persistent,
                            confirm_timeout=budget.timeout(self.retry.confirm_timeout),
                            **properties,
                        )
                        return
                    except ChannelError as exc:
                        if exc.reply_code != NO_ROUTE:
                            connection.collect()
                            raise
                        # Retrying can't help: no queue is bound for this key. The confirm
                        # for the returned message is still in flight, so drop the connection.
                        connection.collect()
                        raise Unroutable(
                            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}; "
                            "the message was returned, not queued"
                        ) from None
                    except (MessageNacked,) + self.connection_errors:
                        # Drop the broken connection; the pool reconnects it on next use.
                        connection.collect()
                        raise
            except (MessageNacked, LimitExceeded) + self.connection_errors as exc:
                budget.retry_or_raise(exc, f"broker at {self.masked_url} did not confirm the publish to {routing_key!r}")

    def publish_many(self, messages: Sequence[Outgoing], *, declare: Iterable[MaybeChannelBound] = ()) -> None:
        """Publish a burst with pipelined publisher confirms: send them all, then collect the acks.

        Waiting for each confirm costs a round trip per message; here the broker acks many
        at once (``multiple``). Returns once every message is confirmed. Messages nacked or
        left unconfirmed by a broken connection are sent again, within the same bounded
        retry as ``publish``; then PublishError says how many are still unconfirmed.
        """
        declare = list(declare)
        pending = list(range(len(messages)))
        budget = self.budget()
        while pending:
            error: BaseException | None = None
            before = len(pending)
            try:
                pending, error = self._publish_pipelined(messages, pending, declare)
            except self.connection_errors as exc:  # could not even connect: nothing was sent
                error = exc
            if not pending:
                return
            if len(pending) < before:  # the budget is for riding out an outage, not for the work done
                budget = self.budget()
            budget.retry_or_raise(
                error or MessageNacked("nacked by the broker"),
                f"broker at {self.masked_url} did not confirm {len(pending)} of {len(messages)} messages",
            )

    def _publish_pipelined(
        self, messages: Sequence[Outgoing], indexes: list[int], declare: list[MaybeChannelBound]
    ) -> tuple[list[int], BaseException | None]:
        """Send ``messages[i]`` for each index on one fresh channel.

        Returns the indexes not confirmed (nacked, unanswered or never sent), and the
        connection error that cut the burst short, if one did.
        """
        # A connection without kombu's confirm-each-publish mode: we select confirm mode
        # ourselves and count the acks.
        with Connection(self.url) as connection:
            channel = connection.channel()
            for entity in declare:
                maybe_declare(entity, channel)
            if self.driver_type != "amqp":  # kombu's virtual transports store synchronously
                for index in indexes:
                    _publish_outgoing(channel, messages[index])
                return [], None
            outstanding: dict[int, int] = {}  # delivery tag -> index into messages
            confirmed: set[int] = set()

            def settle(delivery_tag: int, multiple: bool, ok: bool) -> None:
                tags = [tag for tag in outstanding if tag <= delivery_tag] if multiple else [delivery_tag]
                for tag in tags:
                    index = outstanding.pop(tag, None)
                    if index is not None and ok:
                        confirmed.add(index)

            channel.confirm_select()
            channel.events["basic_ack"].add(lambda tag, multiple: settle(tag, multiple, True))
            channel.events["basic_nack"].add(lambda tag, multiple: settle(tag, multiple, False))
            error: BaseException | None = None
            try:
                for delivery_tag, index in enumerate(indexes, start=1):
                    _publish_outgoing(channel, messages[index])
                    outstanding[delivery_tag] = index
                    while len(outstanding) >= CONFIRM_WINDOW:
                        connection.drain_events(timeout=self.retry.confirm_timeout)
                while outstanding:
                    connection.drain_events(timeout=self.retry.confirm_timeout)
            except socket.timeout:
                error = PublishError(f"no publisher confirm within {self.retry.confirm_timeout} s")
            except self.connection_errors as exc:
                error = exc
            return [index for index in indexes if index not in confirmed], error

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
    declare: Iterable[MaybeChannelBound] = (),
    persistent: bool = True,
    confirm_timeout: float | None = 10.0,
    channel: Any = None,
    content_type: str = CONTENT_TYPE,
    content_encoding: str = CONTENT_ENCODING,
    check_frame_size: bool = False,
    **properties: Any,
) -> None:
    """Publish one message (msgpack unless told otherwise) on a connection the caller owns.

    No retry and no pool: the caller decides what a failure means. With
    ``confirm_publish`` on the connection, py-amqp waits for the broker's ack here.
    ``check_frame_size``: for copies of received messages, whose headers came off the
    wire (see ``ensure_fits_one_frame``); off for the rest, which is the hot path.
    """
    # kombu caches declarations per connection, but binds each entity to the channel before
    # it looks: a third of a small publish's time. Look first.
    declared = connection.declared_entities
    channel = channel or connection.default_channel
    for entity in declare:
        if hash(entity) not in declared:
            maybe_declare(entity, channel)
    # What kombu's Producer.publish does for a body that is already bytes, without building
    # a Producer per message: prepare the message, publish it; py-amqp waits for the confirm.
    mandatory = bool(properties.pop("mandatory", False))
    priority = properties.pop("priority", None)
    message = channel.prepare_message(
        body, priority, content_type, content_encoding, headers or {},
        {"delivery_mode": PERSISTENT if persistent else TRANSIENT, **properties},
    )
    if check_frame_size:
        ensure_fits_one_frame(connection, message)
    channel.basic_publish(
        message, exchange=exchange, routing_key=routing_key, mandatory=mandatory,
        **({"confirm_timeout": confirm_timeout} if confirm_timeout else {}),
    )


def ensure_fits_one_frame(connection: Connection, message: Any) -> None:
    """Raise FrameTooLarge if the message's properties (its headers among them) exceed one frame.

    py-amqp writes them as one frame whatever their size, and past the negotiated
    ``frame_max`` the broker closes the whole connection (FRAME_ERROR). A worker copying a
    received message's headers, plus its own, would reconnect, receive the message again
    and loop; refused here, the connection stays up and the caller can do otherwise.
    """
    serialize = getattr(message, "_serialize_properties", None)
    if serialize is None:  # kombu's virtual transports have no frames
        return
    limit = connection.connection.frame_max - FRAME_OVERHEAD
    size = CONTENT_HEADER_FIELDS + len(serialize())
    if size > limit:
        raise FrameTooLarge(f"the message's headers and properties take {size} bytes, more than one frame ({limit})")


def publish_unconfirmed(
    channel: Any,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    content_type: str,
    content_encoding: str = "utf-8",
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    mandatory: bool = False,
) -> None:
    """Publish a transient message without waiting for a confirm: for broadcasts and replies,
    where a confirm would promise nothing a broker crash wouldn't take away anyway (the
    message is transient, and a reply's queue is exclusive: it dies with the broker too).

    The worker's connections have confirm mode on for every channel (py-amqp swaps each
    channel's ``basic_publish`` for a confirming one); the class's ``basic_publish`` is the
    plain publish underneath that per-channel switch, on py-amqp and virtual transports alike.
    """
    message = channel.prepare_message(
        body, None, content_type, content_encoding, headers or {}, {"delivery_mode": TRANSIENT, **(properties or {})}
    )
    type(channel).basic_publish(channel, message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)


def _publish_outgoing(channel: Any, message: Outgoing) -> None:
    """basic_publish without waiting for a confirm (the bulk path collects them later)."""
    properties = {"delivery_mode": PERSISTENT, **message.properties}
    priority = properties.pop("priority", None)
    amqp_message = channel.prepare_message(
        message.body, priority, CONTENT_TYPE, CONTENT_ENCODING, message.headers, properties
    )
    channel.basic_publish(amqp_message, exchange="", routing_key=message.routing_key)


def queue_counts(connection: Connection, queue_name: str) -> tuple[int, int]:
    """(messages ready, consumers) for a queue, as the broker reports them; raises if it doesn't exist."""
    channel = connection.channel()
    try:
        _, ready, consumers = channel.queue_declare(queue=queue_name, passive=True)
        return ready, consumers
    finally:
        channel.close()
