"""The dashboard's side of the broker: a few threads that each own one connection.

Why threads, and why each owns its connection: kombu/py-amqp connections block and their
channels are not thread-safe, while the web side is asyncio. So nothing on the event loop
touches the broker; these loops fill a ``DashboardState`` (state.py) and the event loop
reads it.

* ``workers`` — a ``Subscription`` on ``taskq.lifecycle`` bound to ``worker.*``: the workers
  table, from heartbeats, as ``taskq status`` listens for them.
* ``tasks`` — another, bound to ``task.succeeded`` and ``task.failed``: the throughput
  chart. Not the same queue as the heartbeats: a busy cluster's task events would fill
  that bounded queue and push heartbeats out (the reason status binds ``worker.*`` only).
* ``logs`` — a ``Subscription`` on the ``taskq.logs`` fanout: the log tail.
* ``counts`` — every second, passive declares give each queue's ready and consumers; a
  ``.dead`` queue whose count changed is read through (dead.py's non-destructive read) for
  the newest failures, their arguments and tracebacks. It also runs the page's actions
  (replay, purge), one at a time, so a peek never hides a dead letter from a replay
  running beside it.

Each loop reconnects by itself through taskq.consumer_loop, as workers and ``taskq logs`` do
(a capped, jittered backoff), and reports itself up or down; the page shows "broker: down"
while any is.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from taskq import consumer_loop, dead, settings, topology
from taskq.broker import queue_counts
from taskq.dashboard.state import CONNECTING, FAILURE_FIELDS, DashboardState, Failure
from taskq.errors import NoSuchQueue, TaskqError, UserActionError
from taskq.message import unpack
from taskq.status import QueueStats, with_dead_letter_queues
from taskq.subscriber import Subscription, records

if TYPE_CHECKING:
    from kombu import Connection

    from taskq.app import App

log = structlog.get_logger("taskq.dashboard")

DEAD_LETTERS_SHOWN = settings.DASHBOARD_DEAD_LETTERS_SHOWN
LONGEST_ARGS = settings.DASHBOARD_LONGEST_ARGS
# Finding the newest dead letters reads the whole .dead queue: after a read that took d
# seconds, that queue isn't read again for SCAN_PAUSE * d, so a huge one can't keep the
# counts thread (and the page's actions) busy.
SCAN_PAUSE = settings.DASHBOARD_SCAN_PAUSE
SUBSCRIPTION_LENGTH = settings.LISTENER_MAX_LENGTH  # what a loop that falls behind may lag by; then the oldest go


def peek_failures(connection: Connection, queue_name: str, limit: int = DEAD_LETTERS_SHOWN) -> list[Failure]:
    """The newest dead letters of ``queue_name``, newest first, with their args; left in place, as ``taskq dead list`` leaves them."""
    try:
        _, messages = dead.newest(connection, queue_name, limit)
    except NoSuchQueue:
        return []
    return [failure_from_message(message, queue_name) for message in reversed(messages)]


def failure_from_message(message: Any, queue_name: str) -> Failure:
    letter = dead.DeadLetter.from_message(message, queue_name)
    known = {name: getattr(letter, name) for name in FAILURE_FIELDS if hasattr(letter, name)}
    return Failure(**{**known, "queue": queue_name, "args": call_arguments(message.body)})


def call_arguments(body: Any) -> str:
    """The task's arguments as the call that failed, ``1, 'x', retries=2``, cut short; a body that isn't ours says so."""
    try:
        payload = unpack(body)
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
        text = ", ".join([*(repr(value) for value in args), *(f"{key}={value!r}" for key, value in kwargs.items())])
    except Exception:  # the reason it was dead-lettered may be this very body
        return "(a body taskq can't decode)"
    return text if len(text) <= LONGEST_ARGS else text[:LONGEST_ARGS] + "…"


@dataclass
class Action:
    """A page's request, run on the counts thread; its result or error goes to ``future``."""

    kind: str  # "replay" or "purge"
    queue: str
    task_id: str | None = None
    future: concurrent.futures.Future[dict[str, Any]] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.future = concurrent.futures.Future()


class Feed:
    """Starts, and stops, the threads that keep a DashboardState current."""

    def __init__(self, app: App, queue_names: list[str]) -> None:
        self.app = app
        self.broker = app.broker
        self.state = DashboardState(app.name, app.broker.masked_url, queue_names)
        self.stopping = threading.Event()
        self.actions: queue.Queue[Action] = queue.Queue()
        self.refresh_now = threading.Event()
        self.scan_after: dict[str, float] = {}  # queue -> when its .dead may be read again (SCAN_PAUSE)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        loops = {"counts": self._serve_counts, "workers": self._serve_workers, "tasks": self._serve_tasks, "logs": self._serve_logs}
        for name, serve in loops.items():
            thread = threading.Thread(target=self._forever, args=(name, serve), name=f"dashboard-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        self.refresh_now.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def submit(self, action: Action) -> concurrent.futures.Future[dict[str, Any]]:
        """Queue an action for the counts thread; fails at once while the broker is down."""
        if self.state.problem("counts"):
            action.future.set_exception(TaskqError(f"the broker at {self.broker.masked_url} is down"))
        else:
            self.actions.put(action)
            self.refresh_now.set()
        return action.future

    # -- the loops --------------------------------------------------------------------------

    def _forever(self, name: str, serve: Callable[[Connection, Callable[[], None]], None]) -> None:
        """Run one loop until stopped, reconnecting with backoff; report the broker up or down.

        ``serve(connection, ready)`` says ``ready()`` once it consumes: up means working, not
        merely connected (a queue the broker refuses to declare keeps the loop down)."""

        def ready() -> None:
            if self.state.problem(name) not in (None, CONNECTING):
                log.info("dashboard reconnected to the broker", loop=name, broker=self.broker.masked_url)
            self.state.component(name, None)

        def lost(event: consumer_loop.Lost) -> None:
            problem = f"{type(event.error).__name__}: {event.error}"[:300]
            if self.state.component(name, problem):  # said once per outage, not per retry
                log.warning("dashboard lost the broker; reconnecting", loop=name, broker=self.broker.masked_url, error=problem)
            if name == "counts":
                self._fail_pending_actions(problem)

        # Any Exception, not only the broker's: a broker gone, refusing us, or a bug in a
        # loop is said on the page and retried; the dashboard itself keeps running.
        consumer_loop.run(lambda: self.broker.connect(heartbeat=settings.LISTENER_HEARTBEAT),
                          lambda connection: serve(connection, ready),
                          errors=(Exception,), should_stop=self.stopping, on_lost=lost)

    def _serve_workers(self, connection: Connection, ready: Callable[[], None]) -> None:
        self._subscribe(connection, topology.lifecycle_exchange(), ["worker.*"], self.state.lifecycle, ready)

    def _serve_tasks(self, connection: Connection, ready: Callable[[], None]) -> None:
        self._subscribe(connection, topology.lifecycle_exchange(), ["task.succeeded", "task.failed"],
                        self.state.lifecycle, ready)

    def _subscribe(self, connection: Connection, exchange: Any, keys: list[str],
                   deliver: Callable[[dict[str, Any]], None], ready: Callable[[], None]) -> None:
        def on_message(message: Any) -> None:
            for record in records(message):
                if record.get("app") == self.app.name:
                    deliver(record)

        subscription = Subscription(self.broker, exchange, keys, max_length=SUBSCRIPTION_LENGTH)
        subscription.consume(connection, on_message, should_stop=self.stopping.is_set, on_ready=lambda _: ready())

    def _serve_logs(self, connection: Connection, ready: Callable[[], None]) -> None:
        shown = {None, *self.state.queue_names}

        def deliver(record: dict[str, Any]) -> None:
            # A worker's own lines (no queue), and a task's if its queue is shown here.
            if record.get("queue") in shown:
                self.state.log_line(record)

        self._subscribe(connection, topology.logs_exchange(), [""], deliver, ready)

    def _serve_counts(self, connection: Connection, ready: Callable[[], None]) -> None:
        ready()
        dead_seen: dict[str, int | None] = {}
        while not self.stopping.is_set():
            self._refresh(connection, dead_seen)
            self.refresh_now.wait(settings.DASHBOARD_REFRESH_INTERVAL)
            self.refresh_now.clear()
            while not self.actions.empty():
                self._run(connection, self.actions.get_nowait())
                dead_seen.clear()  # look at the dead letters again: the action may have moved some
            connection.heartbeat_check()

    def _refresh(self, connection: Connection, dead_seen: dict[str, int | None]) -> None:
        busy = self.state.busy_children()
        stats = []
        for name in with_dead_letter_queues(self.state.queue_names):
            try:
                ready, consumers = queue_counts(connection, name)
            except connection.channel_errors:  # 404: not declared yet
                stats.append(QueueStats(name, None, None, None, exists=False))
                continue
            stats.append(QueueStats(name, ready, busy.get(name, 0), consumers))
        self.state.set_queues(stats)
        dead_counts = {s.name: s.ready for s in stats}
        for name in self.state.queue_names:
            count = dead_counts.get(topology.dead_letter_queue_name(name))
            if (name not in dead_seen or dead_seen[name] != count) and time.monotonic() >= self.scan_after.get(name, 0.0):
                dead_seen[name] = count
                started = time.monotonic()
                self.state.set_failures(name, peek_failures(connection, name) if count else [])
                self.scan_after[name] = time.monotonic() + SCAN_PAUSE * (time.monotonic() - started)

    def _run(self, connection: Connection, action: Action) -> None:
        if not action.future.set_running_or_notify_cancel():
            return  # the page gave up waiting: don't start what nobody will hear the end of
        try:
            if action.queue not in self.state.queue_names:
                raise UserActionError(f"{action.queue!r} is not one of the queues this dashboard shows")
            if action.kind == "replay":
                replayed = dead.replay(self.broker, action.queue, action.task_id)
                if action.task_id and not replayed:
                    raise UserActionError(f"no dead letter with id {action.task_id!r} in {action.queue}.dead")
                result: dict[str, Any] = {"replayed": len(replayed)}
            elif action.kind == "purge":
                try:
                    queue_counts(connection, action.queue)
                except connection.channel_errors:
                    raise UserActionError(f"no queue named {action.queue!r} on the broker") from None
                channel = connection.channel()
                try:
                    result = {"purged": channel.queue_purge(action.queue) or 0}
                finally:
                    channel.close()
            else:
                raise UserActionError(f"unknown action {action.kind!r}")
            log.info("dashboard action", action=action.kind, queue=action.queue, task_id=action.task_id, **result)
            action.future.set_result(result)
        except NoSuchQueue as exc:
            action.future.set_exception(UserActionError(str(exc)))
        except TaskqError as exc:
            action.future.set_exception(exc)
        except Exception as exc:  # the connection broke mid-action: tell the page, then reconnect
            action.future.set_exception(TaskqError(f"{type(exc).__name__}: {exc}"))
            raise

    def _fail_pending_actions(self, problem: str) -> None:
        while not self.actions.empty():
            action = self.actions.get_nowait()
            action.future.set_exception(TaskqError(f"the broker at {self.broker.masked_url} is down ({problem})"))
