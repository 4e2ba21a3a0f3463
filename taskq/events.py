"""Broadcasting from a worker child: its log records and its lifecycle events, out of the task's way.

Any thread may log or emit an event, but only the child's main thread may touch the
connection (AMQP channels are not thread-safe). So a record is serialised where it is
made, put on a bounded in-memory queue, and published by the main loop between its other
work (``tick``): transient, unconfirmed, on a channel of its own. A full queue drops the
record and counts it. Nothing here waits on the broker from a task's thread or raises into
a task.

Records are sent in batches: one message holds the records of one flush that share an
exchange and routing key, as JSON lines (``application/x-ndjson``), and a busy worker
flushes at most every ``TASKQ_BROADCAST_INTERVAL`` seconds (default 0.1). One message per
record cost about a third of a no-op task's throughput (``bench/broadcast_cost.py``): a
py-amqp publish is ~90 µs of Python, and a task makes five records.

Log records carry a per-process sequence number (``seq``), assigned before the drop
decision, so a listener that sees a gap knows exactly how many lines it missed, whether
they were dropped here or in its own bounded queue on the broker.

Nobody listening costs (almost) nothing: batches go out with the ``mandatory`` flag, so
RabbitMQ returns one that no queue is bound for, and the exchange and routing key it came
back from go unheard for ``UNHEARD_INTERVAL`` seconds; then an empty message goes out as
a probe, and if it isn't returned within ``PROBE_GRACE`` of its flush, they flow again.
Unheard lifecycle events are not even built (encoding and publishing three events per
task to nobody cost a no-op task about a fifth of its time), so a listener that starts
while they are unheard misses up to ``UNHEARD_INTERVAL`` of them. Unheard log lines are
*held* instead (see ``HeldLines``): a returned probe proves nobody was bound when it
went out, so only the lines logged before it are let go, and a ``taskq logs`` that binds
gets every line logged after it bound. ``worker.*`` events are always sent (they are
rare, and ``taskq status`` waits for a heartbeat). Brokers that don't return messages
(the embedded one) always get everything.

A worker child holds one Broadcaster through the lifecycle-events middleware
(taskq/middleware/lifecycle_events.py), which calls it at the pipeline's hooks; a process
without that middleware (an in-process test worker) broadcasts nothing.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from taskq import settings, topology
from taskq.broker import publish_unconfirmed

if TYPE_CHECKING:
    from kombu import Connection

    from taskq.message import TaskMessage

# Names and defaults are written in taskq/settings.py (docs/configuration.md).
HEARTBEAT_INTERVAL_ENV = settings.HEARTBEAT_INTERVAL_ENV
BROADCAST_ENV = settings.BROADCAST_ENV
FLUSH_INTERVAL_ENV = settings.BROADCAST_INTERVAL_ENV
BATCH_ENV = settings.BROADCAST_BATCH_ENV
DEFAULT_HEARTBEAT_INTERVAL = settings.WORKER_HEARTBEAT_INTERVAL
DEFAULT_FLUSH_INTERVAL = settings.BROADCAST_INTERVAL
DEFAULT_BATCH = settings.BROADCAST_BATCH
DEFAULT_CAPACITY = settings.BROADCAST_CAPACITY
UNHEARD_INTERVAL = 1.0  # seconds an exchange + routing key nobody is bound for goes unsent
PROBE_GRACE = 0.2  # seconds after its flush that a probe record has to come back returned
NDJSON = "application/x-ndjson"
# One encoder for every record: ``json.dumps(..., default=repr)`` builds a new one per call,
# which was most of the cost of an event.
ENCODER = json.JSONEncoder(default=repr)


LOGS_KEY = (topology.LOGS_EXCHANGE, "")


def number_from_env(name: str, default: float, minimum: float) -> float:
    try:
        return max(minimum, float(os.environ.get(name, default)))
    except ValueError:
        return default


@dataclass
class HeldLines:
    """Encoded log lines kept back while the logs fanout may have nobody bound.

    Why hold rather than drop: a listener can bind at any moment of an unheard spell, and
    it can only count the lines it missed by the gap between two it received. Lines are
    let go only on proof that nobody wanted them: a returned probe shows no queue was
    bound when it was routed, so no listener bound now was there for the lines logged
    before it (``cut``). The rest wait for the next probe, or go out when one isn't
    returned. Bounded: past ``capacity`` the newest line is dropped (counted); the lines
    after it show the gap by their sequence numbers.
    """

    capacity: int
    lines: collections.deque[bytes] = field(default_factory=collections.deque)
    cut: int = 0  # lines logged before the probe that is out

    def hold(self, lines: list[bytes]) -> int:
        """Keep ``lines``; returns how many didn't fit."""
        room = max(self.capacity - len(self.lines), 0)
        self.lines.extend(lines[:room])
        return max(len(lines) - room, 0)

    def probe_sent(self) -> None:
        self.cut = len(self.lines)

    def let_go_unheard(self) -> int:
        """Our probe came back: drop the lines logged before it; returns how many."""
        unheard, self.cut = self.cut, 0
        for _ in range(unheard):
            self.lines.popleft()
        return unheard

    def release(self) -> list[bytes]:
        """All held lines, to send now: somebody listens (or we are stopping)."""
        lines, self.cut = list(self.lines), 0
        self.lines.clear()
        return lines


class Broadcaster:
    """One child's outgoing log records and events, and the state its heartbeats report."""

    def __init__(
        self,
        app_name: str,
        queue_names: list[str],
        *,
        capacity: int = DEFAULT_CAPACITY,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        batch: int = DEFAULT_BATCH,
        broadcast: bool = True,
    ) -> None:
        self.app_name = app_name
        self.queue_names = list(queue_names)
        self.heartbeat_interval = heartbeat_interval
        self.flush_interval = flush_interval
        self.batch = batch
        self.broadcast = broadcast
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.ppid = os.getppid()
        self.dropped = 0
        self.unheard = 0  # records not sent because nobody was listening for them
        self._held = HeldLines(capacity)
        self._probe_numbers = itertools.count(1)
        self._probe_id = ""  # the message_id of the last log probe sent
        # (exchange, routing key) -> monotonic time until which its records are not sent
        self._unheard_until: dict[tuple[str, str], float] = {}
        self._probes: set[tuple[str, str]] = set()  # keys whose one probe record is out
        self.tasks_done = 0
        self.tasks_failed = 0
        # The running task as (message, queue, since); a dict only when a heartbeat asks.
        self.current: tuple[TaskMessage, str, float] | None = None
        self.capacity = capacity
        # deque.append and popleft are atomic: any thread appends, the main thread pops,
        # no lock per record (queue.Queue's cost two per record). The capacity check
        # may let a racing record or two past the bound; the bound is about memory.
        self._pending: collections.deque[tuple[str, str, bytes]] = collections.deque()
        self._sequence = itertools.count(1)
        self._drop_lock = threading.Lock()
        self._channel: Any = None
        self._mandatory = False
        self._next_heartbeat = 0.0
        self._next_flush = 0.0

    # -- any thread ----------------------------------------------------------------------

    def log_processor(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        """structlog processor: queue a copy of the record for the logs fanout; pass it on unchanged."""
        if self.broadcast:
            # Numbered even when dropped: listeners count gaps. Always queued, even while
            # unheard: ``flush`` holds it back (HeldLines).
            record = {**event_dict, "host": self.host, "app": self.app_name, "seq": next(self._sequence)}
            record.setdefault("pid", self.pid)
            self._put(*LOGS_KEY, record)
        return event_dict

    def emit(self, kind: str, **fields: Any) -> None:
        """Queue a lifecycle event; ``kind`` is its routing key, e.g. ``task.succeeded``."""
        if self.wants(kind):
            self._emit(kind, fields)

    def wants(self, kind: str) -> bool:
        """Whether to build a lifecycle event of this kind at all (an unheard one is counted).

        Asked once per event: the answer may start a probe (see ``_nobody_listens``).
        """
        if not self.broadcast and kind.startswith("task."):
            return False
        # The usual case, nobody bound for it, answered here without a call: asked 3 times a task.
        if self._unheard_until and self._nobody_listens(topology.LIFECYCLE_EXCHANGE, kind):
            self.unheard += 1
            return False
        return True

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        record = {"event": kind, "timestamp": time.time(), "host": self.host, "pid": self.pid, "app": self.app_name}
        record.update(fields)
        self._put(topology.LIFECYCLE_EXCHANGE, kind, record)

    def _put(self, exchange: str, routing_key: str, record: dict[str, Any]) -> None:
        try:
            if len(self._pending) >= self.capacity:
                raise OverflowError("broadcast queue full")
            self._pending.append((exchange, routing_key, ENCODER.encode(record).encode()))
        except Exception:  # full, or a value json can't even repr: drop, count, never raise
            with self._drop_lock:
                self.dropped += 1

    def _nobody_listens(self, exchange: str, routing_key: str) -> bool:
        key = (exchange, routing_key)
        until = self._unheard_until.get(key)
        if until is None:
            return False
        now = time.monotonic()
        if now < until:
            return True
        if key in self._probes:
            self._probes.discard(key)
            # Our probe went out and wasn't returned: somebody listens.
            self._unheard_until.pop(key, None)
            return False
        # The quiet spell is over: this one record goes out as a probe; the next ones wait
        # until the flush that carries it had time to come back returned (or not).
        self._probes.add(key)
        self._unheard_until[key] = now + self.flush_interval + PROBE_GRACE
        return False

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        """py-amqp's ``basic.return`` handler: no queue was bound for this batch."""
        key = (exchange, routing_key)
        if routing_key.startswith("worker."):
            return
        if key == LOGS_KEY and key in self._probes:
            if returned_id(message) != self._probe_id:
                return  # a batch from before the probe, back late: the probe's own fate will tell
            self.unheard += self._held.let_go_unheard()
        self._probes.discard(key)
        self._unheard_until[key] = time.monotonic() + UNHEARD_INTERVAL

    # -- the thread holding the connection (the child's main thread, or its watchdog) -----

    def attach(self, connection: Connection) -> None:
        """On each (re)connection: a channel of our own and the exchanges, then ``worker.online``."""
        channel = connection.channel()
        for exchange in (topology.logs_exchange(), topology.lifecycle_exchange()):
            exchange(channel).declare()
        handlers = getattr(channel, "events", None)  # py-amqp's; virtual transports return nothing
        self._mandatory = handlers is not None
        if handlers is not None:
            handlers.setdefault("basic_return", set()).add(self._on_return)
        self._channel = channel
        self.emit("worker.online", **self.status())
        self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        self.flush()

    def detach(self) -> None:
        """On a clean stop: ``worker.offline``, so status forgets us now rather than after a timeout."""
        if self._channel is not None:
            self.emit("worker.offline", **self.status())
            self.flush()
            self._publish_lines(*LOGS_KEY, self._held.release())  # to whoever may listen: we won't probe again
            self._channel = None

    def tick(self) -> None:
        """Send a heartbeat if one is due; publish what is queued if the last flush is old enough."""
        if self._channel is None:
            return
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self.emit("worker.heartbeat", **self.status())
            self._next_heartbeat = now + self.heartbeat_interval
        if now >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Publish queued records, batched per exchange and routing key, in the order they came.

        A broken connection raises to the child's reconnect loop.
        """
        channel = self._channel
        if channel is None:
            return
        self._next_flush = time.monotonic() + self.flush_interval
        batches: dict[tuple[str, str], list[bytes]] = {}
        while True:
            try:
                exchange, routing_key, body = self._pending.popleft()
            except IndexError:
                break
            batches.setdefault((exchange, routing_key), []).append(body)
        lines = batches.pop(LOGS_KEY, [])
        if lines or self._held.lines:
            self._flush_logs(lines)
        for (exchange, routing_key), records in batches.items():
            self._publish_lines(exchange, routing_key, records)

    def _flush_logs(self, lines: list[bytes]) -> None:
        """Send log lines, or hold them while unheard and probe when the spell is over.

        The same spell as ``_nobody_listens``, but nothing is dropped: see ``HeldLines``.
        """
        until = self._unheard_until.get(LOGS_KEY)
        now = time.monotonic()
        if until is None:
            self._publish_lines(*LOGS_KEY, self._held.release() + lines)
        elif now >= until and LOGS_KEY in self._probes:  # the probe wasn't returned: somebody listens
            self._probes.discard(LOGS_KEY)
            del self._unheard_until[LOGS_KEY]
            self._publish_lines(*LOGS_KEY, self._held.release() + lines)
        else:
            with self._drop_lock:
                self.dropped += self._held.hold(lines)
            if now >= until:  # the spell is over: ask again, with nothing anyone could miss
                self._probes.add(LOGS_KEY)
                self._unheard_until[LOGS_KEY] = now + self.flush_interval + PROBE_GRACE
                self._held.probe_sent()
                self._probe_id = f"probe-{self.pid}-{next(self._probe_numbers)}"
                self._publish(*LOGS_KEY, b"", properties={"message_id": self._probe_id})

    def _publish_lines(self, exchange: str, routing_key: str, lines: list[bytes]) -> None:
        """One message per ``batch`` lines, in order."""
        for start in range(0, len(lines), self.batch):
            self._publish(exchange, routing_key, b"\n".join(lines[start:start + self.batch]))

    def _publish(self, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any] | None = None) -> None:
        publish_unconfirmed(self._channel, body, exchange=exchange, routing_key=routing_key, content_type=NDJSON,
                            properties=properties, mandatory=self._mandatory)

    def status(self) -> dict[str, Any]:
        """What a heartbeat tells ``taskq status`` about this child."""
        return {
            "ppid": self.ppid,
            "queues": self.queue_names,
            "current": None if self.current is None else {
                **task_fields(self.current[0], self.current[1]), "since": self.current[2]
            },
            "done": self.tasks_done,
            "failed": self.tasks_failed,
            "dropped": self.dropped,
            "unheard": self.unheard,
            "interval": self.heartbeat_interval,
        }

    # -- lifecycle bookkeeping ------------------------------------------------------------

    def task_received(self, message: TaskMessage, queue_name: str) -> None:
        if self.wants("task.received"):
            self._emit("task.received", task_fields(message, queue_name))

    def task_started(self, message: TaskMessage, queue_name: str) -> None:
        self.current = (message, queue_name, time.time())
        if self.wants("task.started"):
            self._emit("task.started", task_fields(message, queue_name))

    def task_finished(self, message: TaskMessage, queue_name: str, ok: bool, runtime: float, exc_type: str,
                      exc_message: str) -> None:
        self.current = None
        self.tasks_done += 1
        if ok:
            if self.wants("task.succeeded"):
                self._emit("task.succeeded", {**task_fields(message, queue_name), "runtime": runtime})
        else:
            self.tasks_failed += 1
            if self.wants("task.failed"):
                self._emit("task.failed", {**task_fields(message, queue_name), "runtime": runtime,
                                           "exc_type": exc_type, "exc_message": exc_message})


def returned_id(message: Any) -> str | None:
    """The ``message_id`` of a message py-amqp handed back with ``basic.return``."""
    return (getattr(message, "properties", None) or {}).get("message_id")


def task_fields(message: TaskMessage, queue_name: str) -> dict[str, Any]:
    return {"task": message.task, "task_id": message.id, "queue": queue_name, "attempt": message.attempts + 1}
