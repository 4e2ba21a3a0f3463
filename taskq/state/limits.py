"""Rate slots shared by every worker of a cluster, kept in the app's state store.

One operation, ``reserve(key, interval)``: GCRA, atomically ``tat = max(now, tat) + interval``,
returning the start of the reserved slot (``tat - interval``). Every worker of every machine
asks the same store, so ``rate_limit="20/s"`` is 20 a second in total, not per worker
(Celery's limit is per worker instance). A slot in the future is not waited for in the worker:
the rate-limit middleware sends the message back with that slot as its eta (docs/flow-control.md).

Kept apart from the backends' record code (its own table / keys), so the store interface
(``StateStore``) stays three calls; ``rate_slots(store)`` picks the implementation by backend.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable

from taskq.errors import ConfigurationError, StateStoreError
from taskq.state.store import StateStore

if TYPE_CHECKING:
    from taskq.state.sqlite import SQLiteStore


class RateSlots(ABC):
    """Reserves the next start time for a key, atomically across processes."""

    @abstractmethod
    def reserve(self, key: str, interval: float) -> float:
        """The epoch second the caller may start at: now, or later if the key's slots are taken."""


class MemoryRateSlots(RateSlots):
    """One process only (``results="memory://"``, tests)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def reserve(self, key: str, interval: float) -> float:
        with self._lock:
            start = max(self._clock(), self._tat.get(key, 0.0))
            self._tat[key] = start + interval
            return start


class SQLiteRateSlots(RateSlots):
    """A table in the store's own file, on the store's connection (which checks the file is a
    taskq store first); ``BEGIN IMMEDIATE`` makes read-then-write one step for all processes."""

    def __init__(self, store: SQLiteStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._made_for = 0  #: the pid whose connection has the table made

    def reserve(self, key: str, interval: float) -> float:
        with self.store._lock:
            db = self.store._connection()
            try:
                if self._made_for != os.getpid():
                    db.execute("CREATE TABLE IF NOT EXISTS taskq_rate_slots (key TEXT PRIMARY KEY, tat REAL NOT NULL)")
                    self._made_for = os.getpid()
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute("SELECT tat FROM taskq_rate_slots WHERE key = ?", (key,)).fetchone()
                    start = max(self._clock(), row[0] if row else 0.0)
                    db.execute("INSERT OR REPLACE INTO taskq_rate_slots (key, tat) VALUES (?, ?)",
                               (key, start + interval))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StateStoreError(f"state store {self.store.masked_url}: reserving a rate slot failed: {exc}") from exc
            return float(start)


#: GCRA in one Lua step; the key expires once its slots are past, so idle keys cost nothing.
RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, tat)
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(start + interval), 'PX', math.ceil((start + interval - now) * 1000) + 1000)
return tostring(start)
"""


class RedisRateSlots(RateSlots):
    """A key per limit, updated by a Lua script (atomic in Redis), on the server's clock."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._script: Any = None
        self._pid = 0

    def reserve(self, key: str, interval: float) -> float:
        import redis

        try:
            client = self.store._redis()
            if self._script is None or self._pid != os.getpid():
                self._script, self._pid = client.register_script(RESERVE_LUA), os.getpid()
            return float(self._script(keys=[f"{self.store.prefix}rate:{key}"], args=[repr(interval)]))
        except redis.RedisError as exc:
            raise StateStoreError(f"state store {self.store.masked_url}: reserving a rate slot failed: {exc}") from exc


def rate_slots(store: StateStore) -> RateSlots:
    """The rate slots kept beside ``store``'s records."""
    from taskq.state.memory import MemoryStore
    from taskq.state.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return SQLiteRateSlots(store)
    if isinstance(store, MemoryStore):
        return MemoryRateSlots()
    if type(store).__name__ == "RedisStore":  # not imported: redis-py is optional
        return RedisRateSlots(store)
    raise ConfigurationError(f"rate_limit needs a SQLite, Redis or memory state store, not {type(store).__name__}")
