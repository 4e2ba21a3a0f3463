"""The state store in one SQLite file: nothing to install, shared by every process of one machine.

``App(results="embedded")`` puts it beside the embedded broker's ``broker.db`` (a file of its
own, so a busy store never locks the broker's queues); ``results="sqlite:///path"`` anywhere.
WAL mode, so readers (a web request, the dashboard) never wait for a worker's write.

A file that is not a SQLite database, or a database that is not a taskq state store, is an
error that names the file, never a table created in someone else's database.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any, Callable, Mapping

from taskq import settings
from taskq.errors import StateStoreError
from taskq.message import pack, unpack
from taskq.state.records import TaskRecord
from taskq.state.store import StateStore

#: Written into the file when it is made; a file without it is not ours.
FORMAT = "taskq-state-1"
#: Seconds between two sweeps of expired records (by whichever process writes then).
SWEEP_EVERY = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS taskq_state_format (format TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS taskq_state (
    task_id TEXT PRIMARY KEY,
    fields BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS taskq_timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    entry BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS taskq_timeline_task ON taskq_timeline (task_id, seq);
CREATE INDEX IF NOT EXISTS taskq_state_expiry ON taskq_state (expires_at);
"""


#: The chord tables: made on first use (``IF NOT EXISTS``), so a store made before them gains them.
JOIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS taskq_join (
    group_id TEXT NOT NULL, member INTEGER NOT NULL, result BLOB NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (group_id, member)
);
CREATE TABLE IF NOT EXISTS taskq_claim (claim_key TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL);
"""


class SQLiteStore(StateStore):
    """Records in ``path``; one connection per process, used under a lock (a task's ``progress()``
    writes from the task's thread while the worker writes from the connection's)."""

    def __init__(self, path: str, *, retention: float = settings.RESULT_RETENTION,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.masked_url = f"sqlite://{self.path}"
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._next_sweep = 0.0

    def write(self, task_id: str, fields: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> None:
        now = self._clock()
        with self._lock:
            db = self._connection()
            try:
                with db:  # one transaction: the record and its timeline entry, or neither
                    db.execute("BEGIN IMMEDIATE")
                    # A record expired but not swept yet starts afresh, its old timeline with it.
                    db.execute("DELETE FROM taskq_timeline WHERE task_id = ? AND task_id IN "
                               "(SELECT task_id FROM taskq_state WHERE task_id = ? AND expires_at <= ?)",
                               (task_id, task_id, now))
                    db.execute("INSERT OR REPLACE INTO taskq_state (task_id, fields, expires_at) VALUES (?, ?, ?)",
                               (task_id, pack(dict(fields)), now + self.retention))
                    if entry is not None:
                        db.execute("INSERT INTO taskq_timeline (task_id, entry) VALUES (?, ?)", (task_id, pack(dict(entry))))
                        db.execute(
                            "DELETE FROM taskq_timeline WHERE task_id = ? AND seq NOT IN "
                            "(SELECT seq FROM taskq_timeline WHERE task_id = ? ORDER BY seq DESC LIMIT ?)",
                            (task_id, task_id, settings.STATE_TIMELINE_LIMIT),
                        )
                    if now >= self._next_sweep:
                        self._sweep(db, now)
            except sqlite3.Error as exc:
                raise self._error("write to", exc) from exc

    def read(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            if (self._db is None or self._pid != os.getpid()) and not os.path.exists(self.path):
                return None  # no worker wrote yet: a reader makes no file (nor a typo's folder)
            db = self._connection()
            try:
                row = db.execute("SELECT fields, expires_at FROM taskq_state WHERE task_id = ?", (task_id,)).fetchone()
                if row is None or row[1] <= self._clock():
                    return None
                entries = db.execute("SELECT entry FROM taskq_timeline WHERE task_id = ? ORDER BY seq",
                                     (task_id,)).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc
        return TaskRecord.from_fields(task_id, self._decoded(row[0]), [self._decoded(e[0]) for e in entries])

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    # -- the file ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened (and the file checked, or made) on first use.

        A connection inherited across a fork is dropped, never used: SQLite's locks belong to
        the process that took them.
        """
        if self._db is not None and self._pid == os.getpid():
            return self._db
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            db = sqlite3.connect(self.path, timeout=settings.STATE_SQLITE_BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("open", exc) from exc
        try:
            # As the embedded broker: WAL with NORMAL syncs at checkpoints, not at every commit;
            # an application crash loses nothing, a power cut the last moments' writes.
            db.execute("PRAGMA synchronous = NORMAL")
            self._check_or_make(db)
        except sqlite3.Error as exc:
            db.close()
            raise self._error("open", exc) from exc
        except StateStoreError:
            db.close()
            raise
        self._db, self._pid = db, os.getpid()
        return db

    def _check_or_make(self, db: sqlite3.Connection) -> None:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "taskq_state_format" in tables:
            found = db.execute("SELECT format FROM taskq_state_format").fetchone()
            if found is None or found[0] != FORMAT:
                raise StateStoreError(f"{self.path} is a taskq state store of another format "
                                      f"({found[0] if found else 'none'!s}, this taskq reads {FORMAT})")
            return
        if tables - {"sqlite_sequence"}:
            raise StateStoreError(f"{self.path} is a SQLite database but not a taskq state store "
                                  f"(it has the tables {', '.join(sorted(tables))}): refusing to write into it")
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            if db.execute("SELECT format FROM taskq_state_format").fetchone() is None:
                db.execute("INSERT INTO taskq_state_format (format) VALUES (?)", (FORMAT,))

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """Delete what passed its retention: every write restarts a record's, so only idle ones go."""
        db.execute("DELETE FROM taskq_timeline WHERE task_id IN (SELECT task_id FROM taskq_state WHERE expires_at <= ?)",
                   (now,))
        db.execute("DELETE FROM taskq_state WHERE expires_at <= ?", (now,))
        self._next_sweep = now + SWEEP_EVERY

    def _decoded(self, blob: bytes) -> dict[str, Any]:
        try:
            value = unpack(blob)
        except Exception as exc:
            raise StateStoreError(f"state store {self.path}: a record can't be read ({type(exc).__name__}: {exc})") from exc
        if not isinstance(value, dict):
            raise StateStoreError(f"state store {self.path}: a record is not a map")
        return value

    def _error(self, doing: str, exc: BaseException) -> StateStoreError:
        damaged = isinstance(exc, sqlite3.DatabaseError) and ("not a database" in str(exc) or "malformed" in str(exc))
        if damaged:
            return StateStoreError(f"cannot {doing} the state store {self.path}: the file is damaged or not "
                                   f"a SQLite database ({exc}); move it away and a new one is made")
        return StateStoreError(f"cannot {doing} the state store {self.path}: {type(exc).__name__}: {exc}")

    # -- chords (StateStore.join_member, claim_once) -------------------------------------------

    def join_member(self, group_id: str, index: int, result: Any, size: int) -> list[Any] | None:
        """INSERT OR IGNORE and the count in one IMMEDIATE transaction: two workers finishing the
        last two members can't both miss (or both see) the other's row."""
        joined: list[Any] | None = self._in_join_transaction(lambda db: self._join(db, group_id, index, result, size))
        return joined

    def claim_once(self, key: str, token: str) -> bool:
        def claim(db: sqlite3.Connection) -> bool:
            db.execute("INSERT OR IGNORE INTO taskq_claim (claim_key, token, expires_at) VALUES (?, ?, ?)",
                       (key, token, self._clock() + self.retention))
            row = db.execute("SELECT token FROM taskq_claim WHERE claim_key = ?", (key,)).fetchone()
            return bool(row is not None and row[0] == token)

        return bool(self._in_join_transaction(claim))

    def _join(self, db: sqlite3.Connection, group_id: str, index: int, result: Any, size: int) -> list[Any] | None:
        db.execute("INSERT OR IGNORE INTO taskq_join (group_id, member, result, expires_at) VALUES (?, ?, ?, ?)",
                   (group_id, index, pack(result), self._clock() + self.retention))
        rows = db.execute("SELECT member, result FROM taskq_join WHERE group_id = ? ORDER BY member",
                          (group_id,)).fetchall()
        if len(rows) < size:
            return None
        return [unpack(blob) for _, blob in rows[:size]]

    def _in_join_transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            db = self._connection()
            try:
                db.executescript(JOIN_SCHEMA)
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    return work(db)
            except sqlite3.Error as exc:
                raise self._error("join a chord in", exc) from exc
