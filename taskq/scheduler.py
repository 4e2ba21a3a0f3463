"""The scheduler: fires an app's periodic tasks (``@app.periodic``), however many of it run.

Not a worker feature: a scheduler is a producer. Any number may run; exactly one fires,
the one holding the lease, and the broker itself decides who that is:

- **Lease**: an exclusive queue (taskq/topology.py). One connection at a time can declare
  it; the broker deletes it when that connection dies: at once for a killed process (its
  socket closes), after two missed heartbeats (SCHEDULER_HEARTBEAT) for a dead machine or a
  cut network. Followers try to declare it every SCHEDULER_LEASE_POLL seconds. On the
  embedded broker the same declaration is refused while the owning process lives and
  succeeds once it is dead (the broker reaps dead owners before each declaration).
- **Fencing**: the leader fires on the lease's own connection. A leader that lost its lease
  has lost that connection, so its fire fails instead of landing beside its successor's.
- **Durable last tick**: each fire is one publish, with confirm, to the scheduler exchange,
  routed both to the task's queue and to the schedule's last-tick queue (max-length 1). A
  tick is in both or in neither; a new leader peeks at the last-tick queues and resumes
  after them (taskq.schedules.due_ticks), so no tick fires twice and none is lost across a
  takeover. The exact guarantee, and its windows, is in docs/guarantees.md.
- **Deterministic ids**: a fire's message id (the task id) is ``<schedule>@<tick, UTC>``.

No click here: ``taskq scheduler`` (taskq/cli/scheduler.py) parses and calls ``Scheduler.run``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import structlog
from amqp.exceptions import MessageNacked, ResourceLocked
from kombu import Connection

from taskq import consumer_loop, settings, topology
from taskq.broker import publish_on
from taskq.message import TaskMessage, message_body, pack, unpack
from taskq.middleware.pipeline import failed
from taskq.schedules import Schedule, due_ticks, parse_tick, tick_id

if TYPE_CHECKING:
    from taskq.app import App

log = structlog.get_logger("taskq.scheduler")
UTC = timezone.utc

#: Header naming the schedule a message was fired for; its tick is in the message id.
SCHEDULE_HEADER = "schedule"


@dataclass
class ScheduleState:
    """What the leader knows of one schedule: the last tick fired (durably), and the next."""

    schedule: Schedule
    last_fired: datetime | None
    next_run: datetime


def next_runs(app: App, now: datetime | None = None) -> list[tuple[Schedule, datetime]]:
    """Each schedule with its next tick after ``now``: what the banner shows."""
    moment = now or datetime.now(UTC)
    return [(schedule, schedule.next_after(moment)) for schedule in app.schedules.values()]


def schedule_lines(app: App, now: datetime | None = None) -> list[str]:
    """One line per schedule, soonest first, for the banners of ``taskq scheduler`` and ``taskq worker --scheduler``."""
    return [
        f"{schedule.name} ({schedule.trigger.describe()}, catch_up={schedule.catch_up}) -> {schedule.task};"
        f" next {next_run:%Y-%m-%d %H:%M:%S} UTC"
        for schedule, next_run in sorted(next_runs(app, now), key=lambda pair: pair[1])
    ]


def fired_tick(message_id: str) -> datetime:
    """The tick a fire's message id names (``name@2026-01-01T12:00:00Z``)."""
    return parse_tick(message_id.rpartition("@")[2])


def read_last_tick(channel: Any, queue: Any) -> datetime | None:
    """The newest tick in a last-tick queue, which stays there: peeked (taken and put back), not consumed.

    Normally the queue holds one message. It can hold two for a moment (a peek put back while
    a fire came in: the broker applies ``x-max-length`` on publish, not on a requeue), so every
    message is read and the newest tick wins; the older ones are acked away.
    """
    bound = queue(channel)
    messages = []
    while (message := bound.get(no_ack=False)) is not None:
        messages.append(message)
    readable: list[tuple[datetime, Any]] = []
    for message in messages:
        try:
            readable.append((fired_tick(str(message.properties.get("message_id") or message.headers.get("id", ""))), message))
        except ValueError:
            log.warning("unreadable message in a last-tick queue", queue=bound.name)
    if not readable:
        for message in messages:
            message.requeue()
        return None
    newest_tick, newest = max(readable, key=lambda pair: pair[0])
    for message in messages:
        if message is not newest:
            message.ack()
    newest.requeue()  # it stays the record until the next fire replaces it
    return newest_tick


@dataclass
class ScheduleReport:
    """One schedule as ``taskq status`` shows it."""

    name: str
    task: str
    when: str
    catch_up: str
    next_run: str  # ISO, UTC
    last_fired: str | None  # ISO, UTC: the tick in its last-tick queue


@dataclass
class LeaderReport:
    """Whether a scheduler holds the app's lease, and who took it last."""

    held: bool
    host: str | None = None
    pid: int | None = None
    since: str | None = None


def report(app: App, now: datetime | None = None) -> tuple[list[ScheduleReport], LeaderReport]:
    """``report_on`` on a connection of its own."""
    with app.broker.connect() as connection:
        return report_on(connection, app, now)


def report_on(connection: Connection, app: App, now: datetime | None = None) -> tuple[list[ScheduleReport], LeaderReport]:
    """The app's schedules (next run, last fired) and its leader, read off the broker on the
    caller's connection (a dashboard calls it every few seconds): every channel it opens is
    closed before it returns.

    Reads the readers' copies (the schedule-status and leader queues), never the last-tick
    queue: a peek hides a message, and a leader taking over behind one would resume from "now".
    """
    moment = now or datetime.now(UTC)
    schedules = []
    with _Channels(connection) as channels:
        for schedule, next_run in next_runs(app, moment):
            seen = topology.schedule_status_queue(app.name, schedule.name, app.queue_type)
            last = read_last_tick(channels.current, seen) if channels.exists(seen) else None
            schedules.append(ScheduleReport(
                schedule.name, schedule.task, schedule.trigger.describe(), schedule.catch_up,
                next_run.isoformat(), last.isoformat() if last else None,
            ))
        leader = LeaderReport(held=channels.exists(topology.scheduler_lease_queue(app.name)))
        record_queue = topology.scheduler_leader_queue(app.name)
        message = record_queue(channels.current).get(no_ack=False) if channels.exists(record_queue) else None
        if message is not None:
            try:
                record = unpack(message_body(message.body))
                leader = LeaderReport(leader.held, str(record["host"]), int(record["pid"]), str(record["since"]))
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable scheduler leader record", queue=record_queue.name)
            message.requeue()
    return schedules, leader


class _Channels:
    """One channel at a time on a caller's connection, replaced when the broker closes it (a
    passive declare of a missing queue does), and closed on exit: a reader leaks none."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.current: Any = None

    def __enter__(self) -> _Channels:
        self.current = self.connection.channel()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.current.close()

    def exists(self, queue: Any) -> bool:
        """Whether the broker has the queue, without creating it (readers must not declare queues)."""
        try:
            queue(self.current).queue_declare(passive=True)
        except (ResourceLocked, *self.connection.channel_errors) as exc:  # the broker closed this channel
            self.current.close()
            self.current = self.connection.channel()
            # ResourceLocked: RabbitMQ's answer for an exclusive queue (the lease) held by another connection.
            return isinstance(exc, ResourceLocked)
        return True


class Scheduler:
    """Hold the lease when it is free, fire the app's schedules while it is held.

    ``should_stop``: an Event or a callable polled between steps (a signal handler's flag).
    ``on_leading(bool)``: told when this scheduler becomes leader (True) or stops being it.
    ``clock``: the wall clock (tests give their own); waits always use the monotonic one.
    """

    def __init__(
        self,
        app: App,
        *,
        should_stop: consumer_loop.StopFlag,
        on_leading: Callable[[bool], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.app = app
        self.leading = False
        self._stop = should_stop
        self._stopped = should_stop.is_set if isinstance(should_stop, threading.Event) else should_stop
        self._on_leading = on_leading
        self._clock = clock

    def run(self) -> None:
        """Until stopped: connect, wait for the lease, fire; reconnect after a broker outage."""
        broker = self.app.broker
        consumer_loop.run(
            lambda: broker.connect(heartbeat=settings.SCHEDULER_HEARTBEAT),
            self._session,
            # A nack (a full queue with reject-publish refused the fire) ends the session too: the
            # next one reads the last-tick queue again rather than guess what the broker kept.
            errors=(*broker.connection_errors, MessageNacked),
            should_stop=self._stop,
            on_lost=lambda lost: log.warning("scheduler lost the broker", error=str(lost.error), retry_in=round(lost.pause, 1)),
        )

    # -- one connection's life ---------------------------------------------------------------

    def _session(self, connection: Connection) -> None:
        try:
            channel = self._acquire(connection)
            if channel is None:
                return
            self._set_leading(True)
            self._lead(connection, channel)
        finally:
            self._set_leading(False)

    def _acquire(self, connection: Connection) -> Any:
        """Wait for the lease: a channel on which this connection declared it, or None once stopped."""
        lease = topology.scheduler_lease_queue(self.app.name)
        while not self._stopped():
            channel = connection.channel()
            try:
                lease(channel).declare()
                return channel
            except ResourceLocked:  # another scheduler leads; the broker closed this channel
                pass
            self._wait(connection, settings.SCHEDULER_LEASE_POLL)
        return None

    def _lead(self, connection: Connection, channel: Any) -> None:
        now = self._clock()
        states = [self._resume(channel, schedule, now) for schedule in self.app.schedules.values()]
        self._record_leader(connection, channel, now)
        log.info("scheduler leads", app=self.app.name, schedules=len(states))
        lease = topology.scheduler_lease_queue(self.app.name)
        while not self._stopped():
            now = self._clock()
            due = [(state, due_ticks(state.schedule, state.last_fired, now)) for state in states]
            if any(ticks for _, ticks in due):
                lease(channel).declare()  # still ours (ResourceLocked, a channel error, ends the session)
            for state, ticks in due:
                if ticks:
                    self._declare_targets(channel, state.schedule)
                for tick in ticks:
                    self._fire(connection, channel, state.schedule, tick)
                    state.last_fired = tick
                state.next_run = state.schedule.next_after(max(now, state.last_fired or now))
            soonest = min((state.next_run for state in states), default=None)
            pause = settings.SCHEDULER_TICK if soonest is None else (soonest - self._clock()).total_seconds()
            self._wait(connection, min(max(pause, 0.0), settings.SCHEDULER_TICK))

    def _resume(self, channel: Any, schedule: Schedule, now: datetime) -> ScheduleState:
        """Declare where the schedule fires, and read its last fired tick off its last-tick queue.

        A schedule that never fired starts from ``now``: nothing is owed for the time before.
        """
        self._declare_targets(channel, schedule)  # the last-tick queue among them
        last_fired = read_last_tick(channel, topology.last_tick_queue(self.app.name, schedule.name, self.app.queue_type))
        cursor = last_fired or now
        log.info("schedule resumes", schedule=schedule.name, last_fired=last_fired and last_fired.isoformat())
        return ScheduleState(schedule, cursor, schedule.next_after(cursor))

    def _record_leader(self, connection: Connection, channel: Any, now: datetime) -> None:
        record = topology.scheduler_leader_queue(self.app.name)
        publish_on(
            connection, pack({"host": socket.gethostname(), "pid": os.getpid(), "since": now.isoformat()}),
            channel=channel, routing_key=record.name, declare=[record], confirm_timeout=self.app.broker.retry.confirm_timeout,
        )

    def _target_queue(self, schedule: Schedule) -> str:
        task = self.app.tasks.get(schedule.task)
        return schedule.queue or (task.options.queue if task is not None else self.app.default_queue)

    def _declare_targets(self, channel: Any, schedule: Schedule) -> None:
        """The task's queue (as its workers declare it) and the last-tick queue, both bound to the
        scheduler exchange for this schedule's key: declared on each takeover and before each round
        of fires, so a queue an operator deleted comes back instead of a tick reaching only its record."""
        key = topology.scheduler_routing_key(self.app.name, schedule.name)
        queue_name = self._target_queue(schedule)
        topology.scheduler_exchange()(channel).declare()
        self.app.queue(queue_name)(channel).declare()
        self.app.dead_letter_queue(queue_name)(channel).declare()
        channel.queue_bind(queue=queue_name, exchange=topology.SCHEDULER_EXCHANGE, routing_key=key)
        topology.last_tick_queue(self.app.name, schedule.name, self.app.queue_type)(channel).declare()
        topology.schedule_status_queue(self.app.name, schedule.name, self.app.queue_type)(channel).declare()

    def _fire(self, connection: Connection, channel: Any, schedule: Schedule, tick: datetime) -> None:
        """One tick: one confirmed publish on the lease's connection. Raises if unconfirmed, and the
        session ends: the tick is then either nowhere or in both queues, and the next leader knows which."""
        message = TaskMessage(id=tick_id(schedule.name, tick), task=schedule.task, args=schedule.args, kwargs=schedule.kwargs)
        headers = {**message.headers(), SCHEDULE_HEADER: schedule.name}
        for middleware in self.app.middleware:
            if "before_publish" in middleware.used_hooks():
                try:
                    middleware.before_publish(message, headers)
                except Exception as exc:  # a tracing exporter's bug must not stop the tick
                    failed(middleware.before_publish, "before_publish", exc)
        properties: dict[str, Any] = {"message_id": message.id}
        if schedule.priority is not None:
            properties["priority"] = schedule.priority
        publish_on(
            connection, message.body(), channel=channel, exchange=topology.SCHEDULER_EXCHANGE,
            routing_key=topology.scheduler_routing_key(self.app.name, schedule.name), headers=headers,
            confirm_timeout=self.app.broker.retry.confirm_timeout, **properties,
        )
        log.info("fired", schedule=schedule.name, task=schedule.task, id=message.id)

    # -- waiting -------------------------------------------------------------------------------

    def _wait(self, connection: Connection, seconds: float) -> None:
        """Wait while keeping the connection served: read (so the broker's heartbeats count) and
        send ours, or the lease would be lost to a healthy but quiet leader."""
        deadline = time.monotonic() + seconds
        while not self._stopped():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            step = min(left, consumer_loop.STOP_POLL_INTERVAL)
            if self.app.broker.driver_type == "amqp":
                try:
                    connection.drain_events(timeout=step)
                except socket.timeout:
                    pass
                connection.heartbeat_check()
            else:
                time.sleep(step)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if not leading:
            log.info("scheduler no longer leads", app=self.app.name)
        if self._on_leading is not None:
            self._on_leading(leading)
