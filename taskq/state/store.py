"""The one small interface every state-store backend implements, and choosing one by URL.

Three calls: ``write`` replaces a task's record and adds a timeline entry, ``read`` gets
the record back, ``close`` lets go of connections. A write names the whole record (the
worker holds it while the task runs), so no backend reads before it writes: one round trip. Anything the store can't
do raises :class:`taskq.errors.StateStoreError` with one line saying which store and what
failed, so neither the worker nor a caller ever catches a backend's own exceptions.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping

from taskq import settings
from taskq.broker import mask_url
from taskq.errors import ConfigurationError
from taskq.state.records import TaskRecord

#: ``App(results="embedded")``: a SQLite file beside the embedded broker's, named so.
EMBEDDED_FILE = "results.db"


class StateStore(ABC):
    """Where workers record each task's state and result, and any process reads them back."""

    #: Seconds a record is kept after its last write (docs/results.md, "Retention").
    retention: float
    #: Where it is, with any password masked: for error messages and banners.
    masked_url: str

    @abstractmethod
    def write(self, task_id: str, fields: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> None:
        """Make ``fields`` the task's record, append ``entry`` to its timeline (kept), restart its retention."""

    @abstractmethod
    def read(self, task_id: str) -> TaskRecord | None:
        """The task's record, or None if there is none (or it expired)."""

    def close(self) -> None:
        """Let go of connections and files; the store opens them again on next use."""

    # -- chords (docs/workflows.md): one atomic step each, so concurrent workers agree -------

    def join_member(self, group_id: str, index: int, result: Any, size: int) -> list[Any] | None:
        """Record member ``index``'s result (again: idempotent, the first kept); every member's
        result in order once all ``size`` are in, else None. A member run twice counts once."""
        raise ConfigurationError(f"the state store {self.masked_url} can't join chords")

    def claim_once(self, key: str, token: str) -> bool:
        """True for the first ``token`` to claim ``key``, and for that token again (a redelivery
        of the same message); False for any other token (a duplicate publish)."""
        raise ConfigurationError(f"the state store {self.masked_url} can't claim chord callbacks")


def retention_from_env(default: float = settings.RESULT_RETENTION) -> float:
    """``$TASKQ_RESULT_RETENTION`` (seconds) if set, else ``default``; a bad value is an error, not ignored."""
    raw = os.environ.get(settings.RESULT_RETENTION_ENV)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{settings.RESULT_RETENTION_ENV} must be a number of seconds, not {raw!r}") from None
    if not value > 0:
        raise ConfigurationError(f"{settings.RESULT_RETENTION_ENV} must be more than 0 seconds, not {raw!r}")
    return value


def open_store(url: str, *, broker_url: str | None = None, retention: float | None = None) -> StateStore:
    """The store a ``results=`` URL names: ``sqlite:///path``, ``redis://host:port/db``, ``embedded``
    (SQLite beside the embedded broker's file), or ``memory://`` (this process only: tests).

    Nothing connects here: each backend connects on first use, in the process that uses it,
    so an App can be built before a worker forks its children.
    """
    kept = retention if retention is not None else retention_from_env()
    if url == "embedded":
        from taskq.state.sqlite import SQLiteStore

        return SQLiteStore(embedded_results_path(broker_url), retention=kept)
    if url.startswith("sqlite://"):
        from taskq.state.sqlite import SQLiteStore

        path = url[len("sqlite://"):]
        if not path:
            raise ConfigurationError("a sqlite results URL names its file: sqlite:///abs/path.db or sqlite://rel/path.db")
        return SQLiteStore(path, retention=kept)
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from taskq.state.redis import RedisStore
        except ImportError as exc:
            raise ConfigurationError(f"results={mask_url(url)!r} needs redis-py: pip install 'taskq-rabbitmq[redis]' "
                                     f"({exc})") from exc

        return RedisStore(url, retention=kept)
    if url.startswith("memory://"):
        from taskq.state.memory import MemoryStore

        return MemoryStore(retention=kept)
    raise ConfigurationError(
        f"results={mask_url(url)!r}: expected 'embedded', 'sqlite:///path', 'redis://host:port/db' or 'memory://'"
    )


def embedded_results_path(broker_url: str | None) -> str:
    """Beside the app's embedded broker file if it has one, else in ``$TASKQ_HOME`` (./.taskq)."""
    from taskq import embedded
    from taskq.embedded.transport import database_path

    if broker_url and broker_url.startswith(embedded.SCHEME + "://"):
        broker_file = database_path(broker_url.split("+", 1)[1])  # taskq+sqlite:///path -> sqlite:///path
    else:
        broker_file = embedded.default_database_path()
    return os.path.join(os.path.dirname(broker_file), EMBEDDED_FILE)


class Results:
    """An App's state store, opened lazily and once per process (a forked child opens its own)."""

    def __init__(self, spec: str | StateStore, broker_url: Callable[[], str]) -> None:
        if not isinstance(spec, (str, StateStore)):
            raise ConfigurationError(f"results= takes a URL or a StateStore, not {type(spec).__name__}")
        if isinstance(spec, str):
            open_store(spec, broker_url=None)  # a misspelt URL fails at App(), not at the first task
        self.spec = spec
        self._broker_url = broker_url
        self._store: StateStore | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def store(self) -> StateStore:
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                if isinstance(self.spec, StateStore):
                    self._store = self.spec
                else:
                    self._store = open_store(self.spec, broker_url=self._broker_url())
                self._pid = os.getpid()
            return self._store
