"""The embedded broker's state, in one SQLite file shared by every process on the machine.

A RabbitMQ server keeps queues, exchanges, bindings, messages and consumers in its own
memory, so every client sees the same broker. With no server, that state has to live
somewhere all taskq processes can reach: a SQLite database in WAL mode (readers never
block the writer) with short write transactions, one connection per kombu connection.

An unacked message is never deleted on delivery, only *reserved*: the row records the
reserving process (pid and kernel start time, so a recycled pid is not mistaken for the
dead owner) and its channel. Ack deletes the row; requeue, channel close and the death
of the owner clear the reservation, so a SIGKILLed worker's message is delivered again.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from taskq import settings
from taskq.embedded import brokerfile, deadletter
from taskq.embedded.processes import ProcessIdentity, is_alive
from taskq.embedded.routing import publish_sql
from taskq.embedded.schema import create_or_upgrade, queue_settings
from taskq.errors import BrokerBusyError, BrokerFileError, BrokerUnavailableError, EmbeddedBrokerError
from taskq.topics import topic_matches

T = TypeVar("T")

#: SQLite's own wait for a lock is switched off: its handler sleeps at least 1 ms a try,
#: which cost a third of the two-consumer drain rate. ``BrokerStore._run`` waits instead,
#: from 0.1 ms up, doubling.
BUSY_TIMEOUT_MS = 0
FIRST_RETRY_PAUSE = 0.0001
LONGEST_RETRY_PAUSE = 0.05
#: How long we keep retrying before telling the caller the broker is stuck.
GIVE_UP_AFTER_SECONDS = settings.EMBEDDED_GIVE_UP_AFTER
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6

# One statement, so the pick and the reservation are atomic: a write statement takes
# the write lock before it reads, and two consumers can never reserve the same row.
_RESERVE_NEXT = """
UPDATE messages SET owner_pid = ?, owner_start = ?, owner_channel = ?
WHERE id = (SELECT id FROM messages WHERE queue = ? AND owner_pid IS NULL
            AND (expires_at IS NULL OR expires_at > ?)
            ORDER BY priority DESC, id LIMIT 1)
RETURNING id, payload, redelivered
"""
_REMOVE_NEXT = """
DELETE FROM messages
WHERE id = (SELECT id FROM messages WHERE queue = ? AND owner_pid IS NULL
            AND (expires_at IS NULL OR expires_at > ?)
            ORDER BY priority DESC, id LIMIT 1)
RETURNING id, payload, redelivered
"""
# Handing a message back counts a delivery; past the queue's x-delivery-limit it is dead.
_OVER_LIMIT = "redelivered + 1 > (SELECT delivery_limit FROM queues WHERE name = messages.queue)"
_RELEASE = (
    "owner_pid = NULL, owner_start = NULL, owner_channel = NULL, redelivered = redelivered + 1,"
    f" dead_reason = CASE WHEN {_OVER_LIMIT} THEN 'delivery_limit' ELSE dead_reason END,"
    f" expires_at = CASE WHEN {_OVER_LIMIT} THEN 0 ELSE expires_at END"
)


__all__ = ["BrokerBusyError", "BrokerFileError", "BrokerStore", "BrokerUnavailableError", "EmbeddedBrokerError"]


class Delivery(NamedTuple):
    row_id: int
    payload: str
    redelivered: bool


class Published(NamedTuple):
    queues: list[str]
    #: the soonest expires_at among the stored copies; None if none can expire
    soonest_due: float | None
    #: full queues with x-overflow: reject-publish, which did not take it
    refused: list[str]


class StoredExchange(NamedTuple):
    type: str
    durable: bool
    auto_delete: bool
    arguments: dict[str, Any]


_inherited_handles: list[sqlite3.Connection] = []
_abandoned_handles: list[sqlite3.Connection | None] = []


_open_stores: weakref.WeakSet[BrokerStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Keep handles inherited through fork referenced, so garbage collection in the child
    never closes them (SQLite would touch locks and WAL the parent is using), and give
    each store a fresh lock: one held by a parent thread at fork time is never released.
    """
    for store in list(_open_stores):
        if store._db is not None:
            _inherited_handles.append(store._db)
            store._db = None
        store._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class BrokerStore:
    """One kombu connection's handle on the broker database.

    Every call runs under a lock on a connection opened by this process (a handle
    inherited through fork would share SQLite locks with the parent and corrupt them),
    and retries while another process holds the write lock, so "database is locked"
    never reaches the caller.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._db_pid = 0
        self._file_identity: tuple[tuple[int, int], int] | None = None
        #: Set by the max-length trigger when it marks messages dead: they need a pass.
        self.dead_pending = False
        #: Queues that refused the message being published (x-overflow: reject-publish).
        self.refused: list[str] = []

    # -- plumbing ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._db_pid != os.getpid():
            if self._db is not None:  # inherited through fork: see _after_fork_in_child
                _inherited_handles.append(self._db)
            db = brokerfile.connect(self.path)
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                db.create_function("taskq_topic_match", 2, topic_matches, deterministic=True)
                db.create_function("taskq_dead_pending", 0, self._note_dead_pending)
                db.create_function("taskq_refused", 1, self.refused.append)
                self._prepare(db)
            except sqlite3.Error as exc:
                db.close()
                if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                    raise  # _run retries
                raise brokerfile.translate(exc, self.path) from None
            except BaseException:
                db.close()
                raise
            self._db, self._db_pid = db, os.getpid()
            self._file_identity = brokerfile.identity(self.path)  # after the open: the file it opened
            _open_stores.add(self)
        return self._db

    def _note_dead_pending(self) -> None:
        self.dead_pending = True

    def _prepare(self, db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL: a commit survives a crash of any process; only an OS crash or
        # power loss can drop the last commits.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA journal_size_limit = 67108864")  # shrink the WAL back after a burst
        if brokerfile.needs_upgrade(db, self.path):
            db.execute("BEGIN IMMEDIATE")
            try:
                create_or_upgrade(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def check_file(self) -> None:
        """Raise BrokerFileError if the file was deleted, replaced or emptied under the open
        connection: SQLite would go on serving the old one from its cache and WAL, and
        this process would run apart from every process that opens the path afresh."""
        if self._file_identity is None or self._db_pid != os.getpid():
            return
        with self._lock:
            opened, size_seen = self._file_identity
            try:
                self._file_identity = opened, brokerfile.check_still_there(self.path, opened, size_seen)
            except BrokerFileError:
                # Never closed: closing the last handle checkpoints the WAL into whatever
                # is at the path now, writing over the evidence.
                _abandoned_handles.append(self._db)
                self._db = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._db_pid == os.getpid():
                self._db.close()
            self._db = None

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        give_up_at = time.monotonic() + GIVE_UP_AFTER_SECONDS
        pause = FIRST_RETRY_PAUSE
        with self._lock:
            while True:
                try:
                    db = self._connection()
                    return work(db)
                except sqlite3.Error as exc:
                    if not (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                        raise brokerfile.translate(exc, self.path) from None
                    if self._db is not None and self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    if time.monotonic() > give_up_at:
                        raise BrokerBusyError(f"broker database {self.path} stayed locked: {exc}") from exc
                    time.sleep(pause * (0.5 + random.random()))  # jitter: no lockstep between processes
                    pause = min(pause * 2, LONGEST_RETRY_PAUSE)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run several statements as one short write transaction."""

        def in_transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return self._run(in_transaction)

    def _rows(self, sql: str, params: Iterable[object] | dict[str, object] = ()) -> list[tuple[Any, ...]]:
        bound = params if isinstance(params, dict) else tuple(params)
        return self._run(lambda db: db.execute(sql, bound).fetchall())

    # -- exchanges and bindings ----------------------------------------------------------

    def declare_exchange(
        self, name: str, type: str, durable: bool, auto_delete: bool, arguments: dict[str, Any]
    ) -> StoredExchange:
        """Create the exchange unless it exists; return what is stored, to compare."""

        def declare(db: sqlite3.Connection) -> StoredExchange:
            db.execute(
                "INSERT OR IGNORE INTO exchanges VALUES (?, ?, ?, ?, ?)",
                (name, type, int(durable), int(auto_delete), json.dumps(arguments, sort_keys=True)),
            )
            stored = self._exchange_row(db, name)
            assert stored is not None, "inserted, or already there, in this same transaction"
            return stored

        return self._write(declare)

    def get_exchange(self, name: str) -> StoredExchange | None:
        return self._run(lambda db: self._exchange_row(db, name))

    @staticmethod
    def _exchange_row(db: sqlite3.Connection, name: str) -> StoredExchange | None:
        row = db.execute(
            "SELECT type, durable, auto_delete, arguments FROM exchanges WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        return StoredExchange(row[0], bool(row[1]), bool(row[2]), json.loads(row[3]))

    def delete_exchange(self, name: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM bindings WHERE exchange = ?", (name,))
            db.execute("DELETE FROM exchange_bindings WHERE source = ? OR destination = ?", (name, name))
            db.execute("DELETE FROM exchanges WHERE name = ?", (name,))

        self._write(delete)

    def bind(self, exchange: str, routing_key: str, queue: str) -> None:
        self._run(
            lambda db: db.execute("INSERT OR IGNORE INTO bindings VALUES (?, ?, ?)", (exchange, routing_key, queue))
        )

    def unbind(self, exchange: str, routing_key: str, queue: str) -> None:
        self._run(
            lambda db: db.execute(
                "DELETE FROM bindings WHERE exchange = ? AND routing_key = ? AND queue = ?",
                (exchange, routing_key, queue),
            )
        )

    def bind_exchange(self, source: str, routing_key: str, destination: str) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO exchange_bindings VALUES (?, ?, ?)", (source, routing_key, destination)
            )
        )

    def unbind_exchange(self, source: str, routing_key: str, destination: str) -> None:
        self._run(
            lambda db: db.execute(
                "DELETE FROM exchange_bindings WHERE source = ? AND routing_key = ? AND destination = ?",
                (source, routing_key, destination),
            )
        )

    def bindings(self, exchange: str | None = None) -> list[tuple[str, str, str]]:
        """(exchange, routing_key, queue) rows, of one exchange or all."""
        if exchange is None:
            return self._rows("SELECT exchange, routing_key, queue FROM bindings")
        return self._rows("SELECT exchange, routing_key, queue FROM bindings WHERE exchange = ?", (exchange,))

    def exchange_names(self) -> list[str]:
        return [name for (name,) in self._rows("SELECT name FROM exchanges")]

    # -- queues --------------------------------------------------------------------------

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        max_priority: int,
        arguments: dict[str, Any],
        exclusive_to: tuple[ProcessIdentity, int] | None,
    ) -> tuple[ProcessIdentity, int] | None:
        """Create the queue unless it exists; return the exclusive owner that is stored."""
        owner_pid = owner_start = owner_connection = None
        if exclusive_to is not None:
            (owner_pid, owner_start), owner_connection = exclusive_to

        def declare(db: sqlite3.Connection) -> tuple[ProcessIdentity, int] | None:
            db.execute(
                "INSERT OR IGNORE INTO queues (name, durable, auto_delete, max_priority, arguments,"
                " owner_pid, owner_start, owner_connection, message_ttl, max_length, overflow,"
                " dead_letter_exchange, dead_letter_routing_key, delivery_limit)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    int(durable),
                    int(auto_delete),
                    max_priority,
                    json.dumps(arguments, sort_keys=True, default=str),
                    owner_pid,
                    owner_start,
                    owner_connection,
                    *queue_settings(arguments),
                ),
            )
            row = db.execute(
                "SELECT owner_pid, owner_start, owner_connection FROM queues WHERE name = ?", (name,)
            ).fetchone()
            return None if row[0] is None else (ProcessIdentity(row[0], row[1]), row[2])

        return self._write(declare)

    def queue_exists(self, name: str) -> bool:
        return bool(self._rows("SELECT 1 FROM queues WHERE name = ?", (name,)))

    def ready_count(self, queue: str) -> int:
        """Expired or dead messages not yet moved are not counted: nobody can get them."""
        # Two index-only counts: filtering on expires_at in one would read every row.
        ready: int = self._rows(
            "SELECT (SELECT count(*) FROM messages WHERE queue = ? AND owner_pid IS NULL)"
            " - (SELECT count(*) FROM messages WHERE expires_at <= ? AND owner_pid IS NULL AND queue = ?)",
            (queue, deadletter.now(), queue),
        )[0][0]
        return ready

    def consumer_count(self, queue: str) -> int:
        consumers: int = self._rows("SELECT count(*) FROM consumers WHERE queue = ?", (queue,))[0][0]
        return consumers

    def purge(self, queue: str) -> int:
        """Drop the ready messages; like RabbitMQ, unacked ones stay with their consumer."""
        return self._run(
            lambda db: db.execute("DELETE FROM messages WHERE queue = ? AND owner_pid IS NULL", (queue,)).rowcount
        )

    def delete_queue(self, queue: str) -> int:
        return self._write(lambda db: _delete_queue_rows(db, queue))

    def delete_exclusive_queues(self, owner: ProcessIdentity, connection_id: int) -> None:
        def delete(db: sqlite3.Connection) -> None:
            names = db.execute(
                "SELECT name FROM queues WHERE owner_pid = ? AND owner_start = ? AND owner_connection = ?",
                (owner.pid, owner.start, connection_id),
            ).fetchall()
            for (name,) in names:
                _delete_queue_rows(db, name)

        self._write(delete)

    # -- messages ------------------------------------------------------------------------

    def publish(
        self, exchange: str, routing_key: str, payload: str, priority: int, expiration_ms: int | None = None
    ) -> Published:
        """Store one copy per matching queue; return the queues that got one, and those
        that refused it for being full (``x-overflow: reject-publish``)."""
        now = deadletter.now()
        params = {
            "exchange": exchange,
            "key": routing_key,
            "priority": priority if isinstance(priority, int) else 0,
            "payload": payload,
            "now": now,
            "message_expires_at": None if expiration_ms is None else now + max(expiration_ms, 0) / 1000.0,
        }
        sql = publish_sql(exchange)

        def insert(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            self.refused.clear()  # again on each retry: the trigger may have run
            return db.execute(sql, params).fetchall()

        rows = self._run(insert)
        dues = [due for _, due in rows if due is not None]
        return Published([queue for queue, _ in rows], min(dues) if dues else None, list(self.refused))

    def reserve_next(self, queue: str, owner: ProcessIdentity, channel_id: int) -> Delivery | None:
        row = self._rows(_RESERVE_NEXT, (owner.pid, owner.start, channel_id, queue, deadletter.now()))
        return Delivery(row[0][0], row[0][1], bool(row[0][2])) if row else None

    def remove_next(self, queue: str) -> Delivery | None:
        """For no_ack consumers: the message is gone the moment it is handed over."""
        row = self._rows(_REMOVE_NEXT, (queue, deadletter.now()))
        return Delivery(row[0][0], row[0][1], bool(row[0][2])) if row else None

    def reject(self, row_id: int, owner: ProcessIdentity, channel_id: int) -> None:
        """basic.reject without requeue: marked dead for the next pass to dead-letter or drop."""
        self._run(
            lambda db: db.execute(
                "UPDATE messages SET owner_pid = NULL, owner_start = NULL, owner_channel = NULL,"
                " dead_reason = 'rejected', expires_at = 0"
                " WHERE id = ? AND owner_pid = ? AND owner_start = ? AND owner_channel = ?",
                (row_id, owner.pid, owner.start, channel_id),
            )
        )

    # -- expiry and dead-lettering (see deadletter.py) -----------------------------------

    def next_due(self) -> float | None:
        """When the next ready message anywhere expires (or 0: dead ones wait to be moved)."""
        return self._run(deadletter.next_due)

    def move_due(self) -> deadletter.Moved:
        """One transaction moving what is due; loop while ``more``."""
        self.dead_pending = False
        return self._write(lambda db: deadletter.move_due(db, deadletter.now()))

    def ack(self, row_id: int, owner: ProcessIdentity, channel_id: int) -> None:
        self._run(
            lambda db: db.execute(
                "DELETE FROM messages WHERE id = ? AND owner_pid = ? AND owner_start = ? AND owner_channel = ?",
                (row_id, owner.pid, owner.start, channel_id),
            )
        )

    def release(self, row_ids: list[int], owner: ProcessIdentity, channel_id: int | None) -> list[str]:
        """Put reserved messages back where they were in their queue; return those queues.

        ``channel_id`` None: whichever of this process's channels holds them.
        """
        if not row_ids:
            return []
        marks = ",".join("?" * len(row_ids))
        sql = f"UPDATE messages SET {_RELEASE} WHERE id IN ({marks}) AND owner_pid = ? AND owner_start = ?"
        params: tuple[object, ...] = (*row_ids, owner.pid, owner.start)
        if channel_id is not None:
            sql, params = sql + " AND owner_channel = ?", params + (channel_id,)
        return sorted({queue for (queue,) in self._rows(sql + " RETURNING queue", params)})

    def release_channel(self, owner: ProcessIdentity, channel_id: int) -> list[str]:
        return sorted(
            {
                queue
                for (queue,) in self._rows(
                    f"UPDATE messages SET {_RELEASE}"
                    " WHERE owner_pid = ? AND owner_start = ? AND owner_channel = ? RETURNING queue",
                    (owner.pid, owner.start, channel_id),
                )
            }
        )

    # -- consumers -----------------------------------------------------------------------

    def add_consumer(
        self, queue: str, tag: str, owner: ProcessIdentity, channel_id: int, wake_address: str | None
    ) -> None:
        def add(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO consumers VALUES (?, ?, ?, ?, ?, ?)",
                (queue, tag, owner.pid, owner.start, channel_id, wake_address),
            )
            db.execute("UPDATE queues SET had_consumer = 1 WHERE name = ?", (queue,))

        self._write(add)

    def remove_consumers(self, owner: ProcessIdentity, channel_id: int, tag: str | None = None) -> None:
        """Forget one consumer (or all of a channel), then drop auto-delete queues left unused."""

        def remove(db: sqlite3.Connection) -> None:
            sql = "DELETE FROM consumers WHERE pid = ? AND start = ? AND channel = ?"
            params: tuple[object, ...] = (owner.pid, owner.start, channel_id)
            if tag is not None:
                sql, params = sql + " AND tag = ?", params + (tag,)
            queues = {queue for (queue,) in db.execute(sql + " RETURNING queue", params).fetchall()}
            _drop_unused_auto_delete(db, queues)

        self._write(remove)

    def all_wake_addresses(self) -> list[str]:
        """Every waiting consumer's bell: a new soonest expiry concerns them all."""
        return [
            address
            for (address,) in self._rows("SELECT DISTINCT wake_address FROM consumers WHERE wake_address IS NOT NULL")
        ]

    def wake_addresses(self, queues: list[str]) -> list[str]:
        if not queues:
            return []
        marks = ",".join("?" * len(queues))
        return [
            address
            for (address,) in self._rows(
                f"SELECT DISTINCT wake_address FROM consumers WHERE queue IN ({marks}) AND wake_address IS NOT NULL",
                queues,
            )
        ]

    # -- the dead ------------------------------------------------------------------------

    def reap_dead_owners(self, alive: Callable[[ProcessIdentity], bool] = is_alive) -> list[str]:
        """Undo whatever dead processes held: reservations, consumers, exclusive queues.

        Returns the queues that got messages back, so their consumers can be woken.
        """
        owners = self._rows(
            "SELECT owner_pid, owner_start FROM messages WHERE owner_pid IS NOT NULL"
            " UNION SELECT pid, start FROM consumers"
            " UNION SELECT owner_pid, owner_start FROM queues WHERE owner_pid IS NOT NULL"
        )
        dead = [owner for owner in map(ProcessIdentity._make, owners) if not alive(owner)]
        if not dead:
            return []

        def reap(db: sqlite3.Connection) -> list[str]:
            restored: set[str] = set()
            for owner in dead:
                restored.update(
                    queue
                    for (queue,) in db.execute(
                        f"UPDATE messages SET {_RELEASE} WHERE owner_pid = ? AND owner_start = ? RETURNING queue", owner
                    ).fetchall()
                )
                consumed = db.execute(
                    "DELETE FROM consumers WHERE pid = ? AND start = ? RETURNING queue", owner
                ).fetchall()
                exclusive = db.execute(
                    "SELECT name FROM queues WHERE owner_pid = ? AND owner_start = ?", owner
                ).fetchall()
                for (name,) in exclusive:
                    _delete_queue_rows(db, name)
                _drop_unused_auto_delete(db, {queue for (queue,) in consumed})
            return sorted(restored)

        return self._write(reap)


def _delete_queue_rows(db: sqlite3.Connection, queue: str) -> int:
    dropped = db.execute("DELETE FROM messages WHERE queue = ?", (queue,)).rowcount
    db.execute("DELETE FROM bindings WHERE queue = ?", (queue,))
    db.execute("DELETE FROM consumers WHERE queue = ?", (queue,))
    db.execute("DELETE FROM queues WHERE name = ?", (queue,))
    return dropped


def _drop_unused_auto_delete(db: sqlite3.Connection, queues: set[str]) -> None:
    """RabbitMQ deletes an auto-delete queue when its last consumer goes, never before."""
    for queue in queues:
        unused = db.execute(
            "SELECT 1 FROM queues WHERE name = ? AND auto_delete = 1 AND had_consumer = 1"
            " AND NOT EXISTS (SELECT 1 FROM consumers WHERE queue = ?)",
            (queue, queue),
        ).fetchone()
        if unused:
            _delete_queue_rows(db, queue)
