"""The state store's defaults and its ``TASKQ_*`` variable, one line of doc each.

Kept here for now rather than in taskq/settings.py (being edited beside this change): they
are meant to move there, with the lines of docs/configuration.md that describe them.
"""

from __future__ import annotations

#: Seconds a task's record (state, result, timeline) is kept after its last change.
RESULT_RETENTION_ENV = "TASKQ_RESULT_RETENTION"
#: One day: long enough for "what did last night's job return", short enough to bound the store.
RESULT_RETENTION = 86400.0

#: Attempts a worker makes at one state write before it gives up on the store for that message.
WRITE_ATTEMPTS = 5
#: Seconds before the second attempt; doubles per attempt (jittered, taskq.backoff).
WRITE_BACKOFF_FIRST = 0.2
#: Seconds: the cap of that pause. With 5 attempts the worker waits at most ~3 s in all, well
#: inside the AMQP heartbeat (30 s), which nothing serves while the child waits.
WRITE_BACKOFF_MAX = 2.0
#: Seconds one network call to a Redis store may take (connecting, then each command).
REDIS_TIMEOUT = 2.0
#: Seconds a SQLite store waits for a lock another process holds.
SQLITE_BUSY_TIMEOUT = 5.0

#: Seconds between ``StoredResult.get()``'s first two reads of the store; doubles up to the next.
GET_POLL_FIRST = 0.02
#: Seconds: the longest pause between two of its reads.
GET_POLL_MAX = 0.5

#: Most timeline entries kept per task (the latest): a task redelivered or retried without end
#: must not grow its record without bound.
TIMELINE_LIMIT = 100
