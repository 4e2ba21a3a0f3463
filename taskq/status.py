"""What ``taskq status`` reports: the broker's numbers for each queue, and the live workers.

Queue numbers, and where they come from (every report says which):

* ``rabbitmqctl`` — when the broker runs on this host and ``rabbitmqctl`` is on PATH, its
  ``list_queues`` gives ready, unacknowledged and consumers from the broker itself, in one
  snapshot. It is the only source of all three here without the management plugin. Plain
  ``rabbitmqctl`` asks the machine's default node, which need not be the app's broker (another
  node, another port): we first prove which node listens on the URL's port
  (taskq.local_node) and ask that one by name, or don't use rabbitmqctl at all.
* ``amqp`` — anywhere else: a passive queue declare gives ready and consumers (the
  broker's own numbers), but AMQP has no way to ask for unacknowledged ones. We then count
  them from the workers' heartbeats: a child has prefetch 1 and names its current task's
  queue, so the children busy on a queue are exactly its unacked messages — as of their
  last heartbeat, so this one is an estimate and labelled so.

The management HTTP API would give all three remotely, but the plugin is often off (it is
here) and enabling it needs a broker restart; we don't guess at it.

Live workers come from heartbeats on the lifecycle exchange: status listens for a couple
of heartbeat intervals and reports every child heard from, minus those that said offline.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote, urlparse

from taskq import scheduler, settings, topology
from taskq.broker import queue_counts
from taskq.local_node import node_names_to_try, node_short_name_serving
from taskq.subscriber import Subscription, records

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.broker import Broker

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}
DEFAULT_AMQP_PORT = 5672


@dataclass
class QueueStats:
    name: str
    ready: int | None
    unacked: int | None
    consumers: int | None
    exists: bool = True


@dataclass
class WorkerInfo:
    """One worker child, as its last heartbeat described it."""

    host: str
    pid: int
    ppid: int
    queues: list[str]
    current: dict[str, Any] | None
    done: int
    failed: int
    dropped: int
    last_seen: float  # epoch seconds of the last heartbeat received
    concurrency: int = 1  # children of the same supervisor heard from


@dataclass
class Status:
    queues: list[QueueStats]
    workers: list[WorkerInfo]
    counts_from: str
    listened: float
    notes: list[str] = field(default_factory=list)
    schedules: list[scheduler.ScheduleReport] = field(default_factory=list)  # only an app with schedules
    scheduler_leader: scheduler.LeaderReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_dead_letter_queues(queue_names: list[str]) -> list[str]:
    names: list[str] = []
    for name in queue_names:
        names += [name, topology.dead_letter_queue_name(name)]
    return names


def broker_is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in LOCAL_HOSTS or host == socket.gethostname()


def vhost_of(url: str) -> str:
    path = urlparse(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


@dataclass
class RabbitmqctlRun:
    """``rabbitmqctl list_queues`` running against the node proven to serve the app's port."""

    command: list[str]  #: without ``-n NODE``
    nodes: list[str]  #: full names the node may carry, tried in turn
    process: subprocess.Popen[str]


def start_rabbitmqctl(broker: Broker) -> RabbitmqctlRun | str:
    """Start ``rabbitmqctl list_queues`` (a second or two of Erlang start-up) to run while we listen.

    Only for the node proven to listen on the broker's port; else why not, at once.
    """
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        return "rabbitmqctl is not on PATH"
    if broker.driver_type != "amqp" or not broker_is_local(broker.url):
        return "the broker is not a RabbitMQ on this host"
    port = urlparse(broker.url).port or DEFAULT_AMQP_PORT
    short_name = node_short_name_serving(port)
    if short_name is None:
        return f"no RabbitMQ node on this host is proven to listen on port {port}"
    command = [
        executable, "-q", "list_queues", "-p", vhost_of(broker.url),
        "name", "messages_ready", "messages_unacknowledged", "consumers", "--formatter", "json",
    ]
    nodes = node_names_to_try(short_name)
    return RabbitmqctlRun(command, nodes, _run_on(command, nodes[0]))


def _run_on(command: list[str], node: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*command, "-n", node], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_rabbitmqctl(run: RabbitmqctlRun, names: list[str]) -> list[QueueStats] | None:
    rows = _rows(run.process)
    for node in run.nodes[1:]:
        if rows is not None:
            break
        rows = _rows(_run_on(run.command, node))
    if rows is None:
        return None
    return [
        QueueStats(name, rows[name]["messages_ready"], rows[name]["messages_unacknowledged"], rows[name]["consumers"])
        if name in rows
        else QueueStats(name, None, None, None, exists=False)
        for name in names
    ]


def _rows(process: subprocess.Popen[str]) -> dict[str, dict[str, Any]] | None:
    try:
        out, _ = process.communicate(timeout=30)
        return {row["name"]: row for row in json.loads(out)} if process.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        process.kill()
        return None


def amqp_counts(app: App, names: list[str], workers: list[WorkerInfo]) -> list[QueueStats]:
    """Ready and consumers by passive declare; unacked from the children's current tasks."""
    busy: dict[str, int] = {}
    for worker in workers:
        if worker.current:
            queue = worker.current.get("queue")
            if isinstance(queue, str):  # a heartbeat is read off the wire
                busy[queue] = busy.get(queue, 0) + 1
    stats = []
    with app.broker.connect() as connection:
        for name in names:
            try:
                ready, consumers = queue_counts(connection, name)
            except connection.channel_errors:  # 404
                stats.append(QueueStats(name, None, None, None, exists=False))
                continue
            stats.append(QueueStats(name, ready, busy.get(name, 0), consumers))
    return stats


def listen_for_workers(app: App, duration: float, *, should_stop: Callable[[], bool] = lambda: False) -> list[WorkerInfo]:
    """Heartbeats (and online/offline) of this app's workers during ``duration`` seconds."""
    latest: dict[tuple[str, int], WorkerInfo] = {}

    def on_message(message: Any) -> None:
        for record in records(message):
            if record.get("app") == app.name:
                note(record)

    def note(record: dict[str, Any]) -> None:
        key = (record.get("host", "?"), int(record.get("pid", 0)))
        if record.get("event") == "worker.offline":
            latest.pop(key, None)
            return
        latest[key] = WorkerInfo(
            host=key[0],
            pid=key[1],
            ppid=int(record.get("ppid", 0)),
            queues=list(record.get("queues", [])),
            current=record.get("current"),
            done=int(record.get("done", 0)),
            failed=int(record.get("failed", 0)),
            dropped=int(record.get("dropped", 0)),
            last_seen=float(record.get("timestamp", time.time())),
        )

    subscription = Subscription(app.broker, topology.lifecycle_exchange(), ["worker.*"], max_length=settings.LISTENER_MAX_LENGTH)
    subscription.run(on_message, should_stop=should_stop, duration=duration)
    workers = sorted(latest.values(), key=lambda w: (w.host, w.ppid, w.pid))
    for worker in workers:
        worker.concurrency = sum(1 for other in workers if (other.host, other.ppid) == (worker.host, worker.ppid))
    return workers


def collect_status(
    app: App, *, listen: float, counts: str = "auto", queue_names: list[str] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Status:
    """Listen for heartbeats, and meanwhile ask for the queue numbers from the best honest source."""
    names = with_dead_letter_queues(queue_names or app.queue_names)
    notes: list[str] = []
    run = start_rabbitmqctl(app.broker) if counts in ("auto", "rabbitmqctl") else None
    if counts == "rabbitmqctl" and isinstance(run, str):
        notes.append(f"not using rabbitmqctl: {run}")
    run = run if isinstance(run, RabbitmqctlRun) else None
    workers = listen_for_workers(app, listen, should_stop=should_stop)
    schedules, leader = scheduler.report(app) if app.schedules else ([], None)
    queues = finish_rabbitmqctl(run, names) if run is not None else None
    if queues is not None:
        return Status(queues, workers, "rabbitmqctl", listen, notes, schedules, leader)
    if run is not None:
        notes.append("rabbitmqctl failed; fell back to AMQP")
    return Status(amqp_counts(app, names, workers), workers, "amqp (unacked estimated from worker heartbeats)", listen, notes,
                  schedules, leader)


def report_lines(report: Status, app_name: str, listen: float, now: float) -> list[str]:
    """The report as ``taskq status`` prints it: a table of queues, then one line per worker."""
    lines = [f"queues of {app_name} (numbers from {report.counts_from}):",
             f"  {'queue':<40} {'ready':>7} {'unacked':>8} {'consumers':>10}"]
    for q in report.queues:
        if not q.exists:
            lines.append(f"  {q.name:<40} {'(not declared yet)':>27}")
            continue
        lines.append(f"  {q.name:<40} {q.ready:>7} {q.unacked:>8} {q.consumers:>10}")
    lines.append(f"workers heard from in {listen:g} s: {len(report.workers)}")
    for w in report.workers:
        current = f"{w.current['task']}[{w.current['task_id']}]" if w.current else "idle"
        lines.append(
            f"  {w.host} pid {w.pid} (worker {w.ppid}, concurrency {w.concurrency}): {current}; "
            f"done {w.done}, failed {w.failed}; last seen {now - w.last_seen:.1f} s ago"
        )
    if report.scheduler_leader is not None:
        lines += schedule_lines(report.schedules, report.scheduler_leader)
    return lines


def schedule_lines(schedules: list[scheduler.ScheduleReport], leader: scheduler.LeaderReport) -> list[str]:
    """Who leads the app's schedulers, then one line per schedule (times in UTC)."""
    taken = f"{leader.host} pid {leader.pid}, since {leader.since}" if leader.host else None
    if leader.held:
        lines = [f"scheduler leader: {taken or 'held (no record of whom)'}"]
    else:
        lines = ["scheduler leader: none (the lease is free" + (f"; the last was {taken})" if taken else ")")]
    for entry in schedules:
        lines.append(f"  {entry.name} ({entry.when}) -> {entry.task}: next {entry.next_run}, last fired {entry.last_fired or 'never'}")
    return lines
