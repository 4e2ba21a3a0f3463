"""When periodic tasks are due: the ``every=`` / ``cron=`` math, with no I/O and no clock of its own.

Every function takes ``now`` (an aware datetime) so the scheduler, the banner and the tests
(freezegun) ask the same question and get the same answer. Tick times are deterministic:
an ``every=`` schedule ticks at whole multiples of its period since the Unix epoch, a cron
schedule at the times its expression names in its timezone, so any number of schedulers,
on any machines, agree on what "the 12:00:05 tick" is, and it can name its message
(``tick_id``).

Cron is cronsim's (pure Python, no dependencies, maintained by healthchecks.io for their
cron monitoring): a local time that a spring-forward skips fires at the first valid time
after it, a daily time that a fall-back repeats fires once, a schedule finer than an hour
fires in both copies of the repeated hour (Debian cron's rules; docs/periodic.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskq.errors import ConfigurationError

UTC = timezone.utc
CATCH_UP_POLICIES = ("once", "all", "skip")
#: Ticks due this recently are a takeover's (or a slow loop's), not "missed while no scheduler
#: ran": they always fire, each once, whatever the catch-up policy. Far above the takeover
#: bound (a few seconds), far below any outage worth a policy.
TAKEOVER_GRACE = timedelta(seconds=60)
#: ``catch_up="all"`` fires at most this many missed ticks (the most recent): a week offline
#: with ``every=1`` must not become 600,000 messages.
MAX_CATCH_UP = 1000


@dataclass(frozen=True)
class Every:
    """Tick every ``seconds``, at multiples of it since the epoch (so ticks don't drift with restarts)."""

    seconds: float

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        stamp = moment.timestamp()
        index = math.floor(stamp / self.seconds) + 1
        return datetime.fromtimestamp(index * self.seconds, UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        return datetime.fromtimestamp(math.floor(moment.timestamp() / self.seconds) * self.seconds, UTC)

    def describe(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True)
class Cron:
    """Tick at the times a five-field cron expression names, read in ``timezone``."""

    expression: str
    timezone: str = "UTC"

    def next_after(self, moment: datetime) -> datetime:
        # cronsim's forward iteration yields times strictly after its start.
        return next(CronSim(self.expression, moment.astimezone(ZoneInfo(self.timezone)))).astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        # Its reverse iteration yields times strictly before its start: start a minute late, skip what is after.
        for tick in CronSim(self.expression, (moment + timedelta(minutes=1)).astimezone(ZoneInfo(self.timezone)), reverse=True):
            if tick <= moment:
                return tick.astimezone(UTC)
        return None

    def describe(self) -> str:
        return f"cron {self.expression!r} {self.timezone}"


Trigger = Union[Every, Cron]


@dataclass(frozen=True)
class Schedule:
    """One periodic firing of a task: what to send, when, and what to do about missed ticks."""

    name: str
    task: str
    trigger: Trigger
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None  # None: the task's own queue
    priority: int | None = None
    catch_up: str = "once"

    def next_after(self, moment: datetime) -> datetime:
        return self.trigger.next_after(moment)


def make_trigger(every: float | timedelta | None, cron: str | None, timezone_name: str | None) -> Trigger:
    """Check a schedule's when-arguments and build its trigger; ConfigurationError says what is wrong.

    Checked here, at decoration, so a typo'd expression fails when the app is imported,
    not at 3 a.m. in the scheduler.
    """
    if (every is None) == (cron is None):
        raise ConfigurationError("a schedule takes exactly one of every= (seconds) or cron= (an expression)")
    if every is not None:
        if timezone_name is not None:
            raise ConfigurationError("timezone= goes with cron=; every= counts seconds, which have no timezone")
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 1:
            raise ConfigurationError(f"every= must be a number of seconds of at least 1, not {every!r}")
        return Every(float(seconds))
    assert cron is not None
    zone = timezone_name or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown timezone {zone!r} (an IANA name such as 'Europe/Paris')") from None
    try:
        CronSim(cron, datetime.now(UTC))
    except CronSimError as exc:
        raise ConfigurationError(f"malformed cron expression {cron!r}: {exc}") from None
    return Cron(cron, zone)


def check_catch_up(policy: str) -> str:
    if policy not in CATCH_UP_POLICIES:
        raise ConfigurationError(f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, not {policy!r}")
    return policy


def check_name(name: str) -> str:
    """A schedule's name is a routing key word and part of queue names: printable, no AMQP wildcards."""
    if not name or len(name.encode()) > 200 or any(c.isspace() or c in "*#" for c in name):
        raise ConfigurationError(f"schedule name {name!r}: 1-200 bytes, no spaces, '*' or '#'")
    return name


def ticks_between(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """Every tick ``t`` with ``after < t <= until``, oldest first."""
    tick = schedule.next_after(after)
    while tick <= until:
        yield tick
        tick = schedule.next_after(tick)


def due_ticks(schedule: Schedule, last_fired: datetime | None, now: datetime) -> list[datetime]:
    """The ticks to fire now, oldest first, given the last tick fired (durably) and the time.

    ``last_fired=None`` (this schedule never fired): nothing is owed; the first tick is the
    next one. Ticks within TAKEOVER_GRACE of ``now`` always fire. Older ones were missed
    while no scheduler ran, and the schedule's ``catch_up`` decides: ``"once"`` fires the
    latest of them, ``"all"`` every one (at most the MAX_CATCH_UP latest), ``"skip"`` none.
    """
    if last_fired is None:
        return []
    horizon = now - TAKEOVER_GRACE
    missed: list[datetime] = []
    if schedule.catch_up == "all":
        for tick in ticks_between(schedule, last_fired, horizon):
            missed.append(tick)
            if len(missed) > MAX_CATCH_UP:
                del missed[0]
    elif schedule.catch_up == "once":
        latest = schedule.trigger.latest_at_or_before(horizon)
        if latest is not None and latest > last_fired:
            missed = [latest]
    return missed + list(ticks_between(schedule, max(last_fired, horizon), now))


def tick_id(schedule_name: str, tick: datetime) -> str:
    """The deterministic message id of one firing: the same tick gets the same id from any scheduler."""
    return f"{schedule_name}@{tick.astimezone(UTC).isoformat().replace('+00:00', 'Z')}"


def parse_tick(text: str) -> datetime:
    """The tick of a ``tick_id``'s time part (or of a stored last-fired tick)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def make_schedule(
    task: str,
    *,
    every: float | timedelta | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    catch_up: str = "once",
    name: str | None = None,
) -> Schedule:
    """A checked Schedule for ``App.periodic`` / ``App.schedule``: every mistake is a ConfigurationError now."""
    trigger = make_trigger(every, cron, timezone)
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255):
        raise ConfigurationError(f"priority must be an integer 0-255, not {priority!r}")
    return Schedule(
        name=check_name(name or task), task=task, trigger=trigger, args=tuple(args), kwargs=dict(kwargs or {}),
        queue=queue, priority=priority, catch_up=check_catch_up(catch_up),
    )
