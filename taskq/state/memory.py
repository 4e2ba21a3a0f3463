"""A state store in this process's memory: for tests and ``InlineWorker``, where the worker
and the caller share one process. Nothing survives the process, nothing crosses to another."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping

from taskq import settings
from taskq.state.records import TaskRecord
from taskq.state.store import StateStore


class MemoryStore(StateStore):
    """Records in a dict, expired by the clock it is given (``time.time`` unless a test says)."""

    masked_url = "memory://"

    def __init__(self, retention: float = settings.RESULT_RETENTION, clock: Callable[[], float] = time.time) -> None:
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        #: task id -> (fields, timeline, expires at)
        self._records: dict[str, tuple[dict[str, Any], list[dict[str, Any]], float]] = {}
        self._joins: dict[str, dict[int, Any]] = {}  #: chord id -> member index -> result
        self._claims: dict[str, str] = {}  #: claim key -> the token that won it

    def write(self, task_id: str, fields: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            now = self._clock()
            old = self._records.get(task_id)
            timeline = [] if old is None or old[2] <= now else old[1]
            if entry is not None:
                timeline = [*timeline, dict(entry)][-settings.STATE_TIMELINE_LIMIT:]
            self._records[task_id] = (dict(fields), timeline, now + self.retention)

    def read(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            found = self._records.get(task_id)
            if found is None:
                return None
            fields, timeline, expires_at = found
            if expires_at <= self._clock():
                del self._records[task_id]
                return None
            return TaskRecord.from_fields(task_id, fields, timeline)

    # -- chords (StateStore.join_member, claim_once) -------------------------------------------

    def join_member(self, group_id: str, index: int, result: Any, size: int) -> list[Any] | None:
        with self._lock:
            members = self._joins.setdefault(group_id, {})
            members.setdefault(index, result)
            return [members[i] for i in range(size)] if len(members) >= size else None

    def claim_once(self, key: str, token: str) -> bool:
        with self._lock:
            return self._claims.setdefault(key, token) == token
