"""Task state and results by id, from any process (docs/results.md, "State store").

``App(results=URL)`` turns it on: a middleware in each worker child records every task's
state before its message is acked (taskq/middleware/state_store.py), and
``app.result(task_id)`` reads it back anywhere. Backends behind one small interface
(:class:`StateStore`): SQLite (``embedded``, ``sqlite:///path``), Redis (``redis://``),
and memory (``memory://``, tests).
"""

from __future__ import annotations

from taskq.state.handle import StoredResult
from taskq.state.records import FINAL_STATES, TaskRecord, TaskState, TimelineEntry
from taskq.state.store import Results, StateStore, open_store

__all__ = ["FINAL_STATES", "Results", "StateStore", "StoredResult", "TaskRecord", "TaskState", "TimelineEntry",
           "open_store"]
