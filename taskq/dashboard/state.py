"""What the dashboard page shows, as plain data behind one lock.

The broker threads (feed.py) write it; the event loop (app.py) reads a snapshot of it and
the log lines it has not sent yet. Nothing here talks to the broker or to a browser, so it
is the part to read first, and the easy part to test.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from taskq import settings, topology
from taskq.status import QueueStats, WorkerInfo

LOG_LINES_KEPT = settings.DASHBOARD_LOG_LINES_KEPT
LONGEST_VALUE = 4000  # characters of one log field sent to the page
BUCKET_SECONDS = settings.DASHBOARD_BUCKET_SECONDS
BUCKETS = settings.DASHBOARD_BUCKETS
COMPONENTS = ("counts", "workers", "tasks", "logs")  # the feed's loops, each with its connection
CONNECTING = "connecting"


@dataclass(frozen=True)
class Failure:
    """A dead letter as the page shows it: dead.py's view, the traceback the worker recorded, the call's arguments."""

    queue: str
    task_id: str
    task: str
    reason: str
    detail: str
    exc_type: str
    exc_message: str
    attempts: int | None
    traceback: str
    args: str  # the call's arguments, short: ``1, 'x', retries=2``


FAILURE_FIELDS = tuple(field.name for field in fields(Failure))

class Throughput:
    """Tasks finished per ``BUCKET_SECONDS`` over the last ``BUCKETS`` buckets, by server receipt time."""

    def __init__(self) -> None:
        self.counts: dict[int, list[int]] = {}

    def add(self, when: float, ok: bool) -> None:
        bucket = int(when // BUCKET_SECONDS)
        self.counts.setdefault(bucket, [0, 0])[0 if ok else 1] += 1
        for old in [b for b in self.counts if b <= bucket - BUCKETS]:
            del self.counts[old]

    def series(self, now: float) -> dict[str, Any]:
        last = int(now // BUCKET_SECONDS)
        buckets = range(last - BUCKETS + 1, last + 1)
        return {
            "bucket_seconds": BUCKET_SECONDS,
            "end": (last + 1) * BUCKET_SECONDS,
            "succeeded": [self.counts.get(b, [0, 0])[0] for b in buckets],
            "failed": [self.counts.get(b, [0, 0])[1] for b in buckets],
        }


def short(value: Any) -> Any:
    """A log field small enough to ship to a browser many times a second."""
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    if len(text) > LONGEST_VALUE:
        return text[:LONGEST_VALUE] + "…"
    return value


class DashboardState:
    """Everything the page shows, written by the broker threads and read by the event loop.

    One lock around plain data; ``notify`` (set by the web side) is called after each
    change and must be cheap and thread-safe.
    """

    def __init__(self, app_name: str, broker_url: str, queue_names: list[str]) -> None:
        self.app_name = app_name
        self.broker_url = broker_url  # masked: this goes to every browser
        self.queue_names = list(queue_names)
        self.notify: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._problems: dict[str, str | None] = {name: CONNECTING for name in COMPONENTS}
        self._queues: list[QueueStats] = []
        self._failures: dict[str, list[Failure]] = {}
        self._workers: dict[tuple[str, int], tuple[WorkerInfo, float]] = {}  # and when it expires
        self._throughput = Throughput()
        self._logs: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=LOG_LINES_KEPT)
        self._log_count = 0

    # -- written by the broker threads ---------------------------------------------------

    def component(self, name: str, problem: str | None) -> bool:
        """One loop's connection is up (``problem`` None) or down; True if that is news."""
        with self._lock:
            was = self._problems.get(name)
            self._problems[name] = problem
        if was != problem:
            self.notify()
        return problem is not None and was in (None, CONNECTING)

    def set_queues(self, stats: list[QueueStats]) -> None:
        with self._lock:
            self._queues = stats
        self.notify()

    def set_failures(self, queue_name: str, failures: list[Failure]) -> None:
        """A queue's newest dead letters, newest first."""
        with self._lock:
            self._failures[queue_name] = failures
        self.notify()

    def lifecycle(self, record: dict[str, Any]) -> None:
        """A worker heartbeat/online/offline, or a task event, of this app."""
        kind = record.get("event", "")
        now = time.time()
        with self._lock:
            if kind in ("task.succeeded", "task.failed") and record.get("queue") in self.queue_names:
                self._throughput.add(now, kind == "task.succeeded")
            elif kind.startswith("worker.") and set(record.get("queues", [])) & set(self.queue_names):
                key = (str(record.get("host", "?")), int(record.get("pid", 0)))
                if kind == "worker.offline":
                    self._workers.pop(key, None)
                else:
                    # Gone without a word (killed): forgotten after three missed heartbeats.
                    interval = float(record.get("interval") or 2.0)
                    self._workers[key] = (worker_from_record(key, record, now), now + max(3 * interval, 5.0))
            else:
                return
        self.notify()

    def log_line(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._log_count += 1
            self._logs.append((self._log_count, {key: short(value) for key, value in record.items()}))
        self.notify()

    # -- read by the event loop and the counts thread -------------------------------------

    def problem(self, component: str) -> str | None:
        with self._lock:
            return self._problems.get(component)

    def busy_children(self) -> dict[str, int]:
        """Children busy on each queue: each holds one unacked message (prefetch 1), as status.py counts them."""
        busy: dict[str, int] = {}
        with self._lock:
            for worker, _ in self._workers.values():
                if worker.current:
                    name = worker.current.get("queue")
                    if isinstance(name, str):  # a heartbeat is read off the wire
                        busy[name] = busy.get(name, 0) + 1
        return busy

    def logs_after(self, number: int, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            lines = [{"n": n, **record} for n, record in self._logs if n > number]
        return lines[-limit:]

    def snapshot(self) -> dict[str, Any]:
        """The page's state as JSON-able data (log lines travel separately)."""
        now = time.time()
        with self._lock:
            for key in [k for k, (_, expires) in self._workers.items() if expires < now]:
                del self._workers[key]
            problems = {name: problem for name, problem in self._problems.items() if problem}
            by_name = {stats.name: stats for stats in self._queues}
            queues = []
            for name in self.queue_names:
                stats = by_name.get(name)
                dead_stats = by_name.get(topology.dead_letter_queue_name(name))
                queues.append({
                    "name": name,
                    "exists": bool(stats and stats.exists),
                    "ready": stats.ready if stats else None,
                    "unacked": stats.unacked if stats else None,
                    "consumers": stats.consumers if stats else None,
                    "dead": dead_stats.ready if dead_stats and dead_stats.exists else None,
                })
            workers = sorted((asdict(w) for w, _ in self._workers.values()), key=lambda w: (w["host"], w["ppid"], w["pid"]))
            failures = [asdict(f) for name in self.queue_names for f in self._failures.get(name, [])]  # newest first
            throughput = self._throughput.series(now)
        return {
            "app": self.app_name,
            "broker_url": self.broker_url,
            "broker": {"up": not problems, "problems": problems},
            "queues": queues,
            "workers": workers,
            "failures": failures,
            "throughput": throughput,
        }


def worker_from_record(key: tuple[str, int], record: dict[str, Any], received: float) -> WorkerInfo:
    """status.py's WorkerInfo; ``last_seen`` is our clock, so a worker host's skew can't age it."""
    return WorkerInfo(
        host=key[0], pid=key[1], ppid=int(record.get("ppid", 0)), queues=list(record.get("queues", [])),
        current=record.get("current"), done=int(record.get("done", 0)), failed=int(record.get("failed", 0)),
        dropped=int(record.get("dropped", 0)), last_seen=received,
    )
