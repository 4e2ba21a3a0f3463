"""Making the broker file, and refusing one that is not a whole, current taskq broker.

SQLite opens whatever is at the path: a file truncated to 0 bytes is an empty database
to it, so taskq used to lay new tables over it and run on, the queued tasks gone without
a word. Here a file is only ever *created* complete (built under a temporary name, then
hard-linked into place, which fails if the name exists), so an empty or half-made file
at the path is never "one another process is still creating": it is damage, and every
process says so in one line that names the file and what to do, and leaves it alone.

A file is recognised as ours by its header's ``application_id``; a store made before
taskq stamped it is recognised by its tables and stamped on upgrade. Each process checks
a file once (``PRAGMA quick_check`` reads it all) and after that only its header, at
each new connection.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import struct
import threading
from urllib.parse import quote

from taskq.embedded.schema import APPLICATION_ID, SCHEMA_VERSION, create_or_upgrade
from taskq.errors import BrokerFileError, BrokerUnavailableError

#: The tables that mark a store made before the header was stamped (schema versions 1 and 2).
LEGACY_TABLES = {"queues", "messages"}

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_READONLY = 8
_SQLITE_TRANSIENT = {10, 13, 14}  # IOERR, FULL, CANTOPEN: may pass, treated like a broker down

_RESTORE = "restore it from a backup, or move it away to start an empty broker"
_DELETED = "restore it from a backup, or restart every taskq process to start an empty broker"

#: path -> (st_dev, st_ino) of the file this process checked in full; forked children inherit it.
_checked: dict[str, tuple[int, int]] = {}
_checking = threading.Lock()


def _after_fork_in_child() -> None:
    """A lock held by another of the parent's threads at fork time is never released."""
    global _checking
    _checking = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def ensure(path: str) -> None:
    """Create the broker file if there is none, else check it in full once per process.

    Cheap after the first call (one ``stat``): called by every new transport, so a
    worker's supervisor refuses a bad file before it forks a single child.
    """
    with _checking:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            if path in _checked:  # this process used it: someone deleted it under us
                raise BrokerFileError(f"broker file {path} was deleted while in use: {_DELETED}") from None
            _create(path)
            info = os.stat(path)
        except OSError as exc:
            raise BrokerFileError(f"broker file {path}: cannot look at it: {exc}") from None
        identity = (info.st_dev, info.st_ino)
        if _checked.get(path) == identity:
            return
        _check(path, info)
        _checked[path] = identity


def connect(path: str) -> sqlite3.Connection:
    """A connection to the existing file: ``mode=rw`` so SQLite never makes one silently."""
    ensure(path)
    try:
        return sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def identity(path: str) -> tuple[tuple[int, int], int] | None:
    """Which file is at the path now (device, inode), and its size; None if none is."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino), info.st_size


def check_still_there(path: str, opened: tuple[int, int], size_seen: int) -> int:
    """The file a connection opened is still the one at the path, no shorter than it was
    (a store never shrinks: nothing vacuums it); returns its size now."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BrokerFileError(f"broker file {path} was deleted while in use: {_DELETED}") from None
    except OSError:
        return size_seen
    if (info.st_dev, info.st_ino) != opened:
        raise BrokerFileError(
            f"broker file {path} was replaced while in use: stop every taskq process that used it "
            "(what they wrote since went into the old file), then start them again"
        )
    if info.st_size < size_seen:
        raise BrokerFileError(
            f"broker file {path} was truncated while in use ({size_seen} bytes, now {info.st_size}): {_RESTORE}"
        )
    return info.st_size


def needs_upgrade(db: sqlite3.Connection, path: str) -> bool:
    """Check a new connection's header; True if the tables must be brought up to date."""
    application_id, version = _header(db, path)
    if application_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise BrokerFileError(
                f"broker file {path} was written by a newer taskq (store version {version}, this taskq "
                f"knows up to {SCHEMA_VERSION}): upgrade taskq; the file was left as it is"
            )
        return version != SCHEMA_VERSION
    if application_id == 0 and version in (1, 2) and LEGACY_TABLES <= _tables(db, path):
        return True  # made before the header was stamped; the upgrade stamps it
    if os.path.getsize(path) == 0:
        raise BrokerFileError(
            f"broker file {path} is empty (0 bytes): it was truncated or replaced, and the tasks it held "
            f"are not in it; {_RESTORE}"
        )
    raise BrokerFileError(
        f"broker file {path} is an SQLite database of another program, not a taskq broker; "
        "move it away or point TASKQ_HOME / --broker elsewhere; it was left as it is"
    )


def translate(exc: sqlite3.Error, path: str) -> Exception:
    """A taskq error for what SQLite said about the file, so no caller sees ``sqlite3.*``."""
    code = _error_code(exc)
    if code in _SQLITE_TRANSIENT:
        return BrokerUnavailableError(f"cannot use broker file {path}: {exc}")
    if code == _SQLITE_READONLY:
        return BrokerFileError(f"broker file {path} is read-only here ({exc}): make it and its folder writable")
    if code == _SQLITE_NOTADB:
        return BrokerFileError(f"broker file {path} is not an SQLite database: {_RESTORE}")
    if code == _SQLITE_CORRUPT:
        return BrokerFileError(f"broker file {path} is damaged ({exc}): {_RESTORE}")
    return BrokerFileError(f"broker file {path} cannot be used ({type(exc).__name__}: {exc}): {_RESTORE}")


#: Python 3.10's sqlite3 errors carry no code: SQLite's own messages for the codes above.
_CODES_BY_MESSAGE = {
    "file is not a database": _SQLITE_NOTADB,
    "malformed": _SQLITE_CORRUPT,
    "readonly": _SQLITE_READONLY,
    "disk i/o error": 10,
    "database or disk is full": 13,
    "unable to open": 14,
}


def _error_code(exc: sqlite3.Error) -> int:
    code: int | None = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF
    text = str(exc).lower()
    return next((code for words, code in _CODES_BY_MESSAGE.items() if words in text), 0)


# -- creating ---------------------------------------------------------------------------


def _create(path: str) -> None:
    """Build the store under a temporary name, then link it into place: the path shows a
    whole store or nothing. Racing processes each build one; the first link wins."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise BrokerFileError(f"broker file {path}: cannot create its folder: {exc}") from None
    temporary = os.path.join(folder, f".{os.path.basename(path)}.new-{os.getpid()}-{threading.get_ident()}")
    try:
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("BEGIN IMMEDIATE")
            create_or_upgrade(db)
            db.execute("COMMIT")
        finally:
            db.close()  # the last connection: the WAL is checkpointed into the file and removed
        with contextlib.suppress(FileExistsError):  # another process was first: theirs it is
            os.link(temporary, path)
    except (OSError, sqlite3.Error) as exc:
        raise BrokerFileError(f"broker file {path}: cannot create it: {exc}") from None
    finally:
        for leftover in (temporary, f"{temporary}-wal", f"{temporary}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


# -- checking ---------------------------------------------------------------------------


def _check(path: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise BrokerFileError(f"broker file {path} is a directory: move it away or point TASKQ_HOME / --broker elsewhere")
    if not stat.S_ISREG(info.st_mode):
        raise BrokerFileError(f"broker file {path} is not a regular file: move it away")
    folder = os.path.dirname(path) or "."
    if not os.access(path, os.R_OK | os.W_OK):
        raise BrokerFileError(f"broker file {path} is not readable and writable by this user: fix its permissions")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BrokerFileError(
            f"broker file {path}: its folder is not writable by this user, and SQLite keeps the -wal and -shm "
            "files beside it: fix the folder's permissions"
        )
    _check_wal_kept(path)
    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    try:
        needs_upgrade(db, path)
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    finally:
        db.close()
    if problems != ["ok"]:
        raise BrokerFileError(f"broker file {path} is damaged (SQLite: {'; '.join(problems)}): {_RESTORE}")


def _header(db: sqlite3.Connection, path: str) -> tuple[int, int]:
    try:
        return db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def _tables(db: sqlite3.Connection, path: str) -> set[str]:
    try:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


# The WAL index (-shm) header, as https://www.sqlite.org/walformat.html lays it out, in the
# machine's byte order: two copies of 48 bytes, then the checkpoint info.
_WAL_INDEX_HEADER = struct.Struct("=IIIBBHII")  # version, unused, change, init, big-endian, page size, frames, pages
_WAL_FRAME_HEADER = 24
_WAL_HEADER = 32


def _check_wal_kept(path: str) -> None:
    """Commits that no checkpoint copied into the file yet live only in the -wal file; if it
    was deleted or cut short, SQLite would open the older file without a word. The index
    beside it (-shm) still says how many frames there were, so the loss can be told."""
    try:
        with open(f"{path}-shm", "rb") as shm:
            index = shm.read(136)
    except FileNotFoundError:
        return  # the last process closed cleanly: everything is in the file
    except OSError:
        return
    if len(index) < 100 or index[:48] != index[48:96]:
        return  # not initialised, or being written this instant by a live process: no verdict
    _, _, _, initialised, _, page_size, frames, _ = _WAL_INDEX_HEADER.unpack_from(index)
    (backfilled,) = struct.unpack_from("=I", index, 96)
    if not initialised or frames <= backfilled:
        return
    page_size = 65536 if page_size == 1 else page_size
    needed = _WAL_HEADER + frames * (_WAL_FRAME_HEADER + page_size)
    try:
        kept = os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        kept = -1
    if kept < needed:
        what = "was deleted" if kept < 0 else f"was cut short ({kept} of {needed} bytes)"
        raise BrokerFileError(
            f"broker file {path}: its write-ahead log {path}-wal {what}, and with it the last "
            f"{frames - backfilled} pages of commits (queued or acked tasks): put the -wal file back if you can, "
            f"else {_RESTORE}"
        )
