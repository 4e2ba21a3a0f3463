"""The schedule math (taskq/schedules.py): tick times, DST, catch-up policies, bad input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from taskq import App
from taskq.errors import ConfigurationError
from taskq.schedules import TAKEOVER_GRACE, due_ticks, make_schedule, parse_tick, tick_id

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def paris(schedule: str, start: str, count: int) -> list[str]:
    entry = make_schedule("t", cron=schedule, timezone="Europe/Paris")
    moment, out = at(start), []
    for _ in range(count):
        moment = entry.next_after(moment)
        out.append(moment.isoformat())
    return out


def test_every_ticks_at_multiples_of_its_period_since_the_epoch() -> None:
    entry = make_schedule("t", every=30)
    assert entry.next_after(at("2026-01-01T12:00:07+00:00")) == at("2026-01-01T12:00:30+00:00")
    assert entry.next_after(at("2026-01-01T12:00:30+00:00")) == at("2026-01-01T12:01:00+00:00")  # strictly after
    assert make_schedule("t", every=timedelta(minutes=5)).next_after(at("2026-01-01T12:01:00+00:00")) == at("2026-01-01T12:05:00+00:00")


def test_cron_in_utc_by_default() -> None:
    entry = make_schedule("t", cron="*/5 * * * *")
    assert entry.next_after(at("2026-01-01T12:03:00+00:00")) == at("2026-01-01T12:05:00+00:00")
    assert entry.next_after(at("2026-01-01T12:05:00+00:00")) == at("2026-01-01T12:10:00+00:00")


def test_spring_forward_in_paris_fires_a_skipped_time_at_the_first_valid_one() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 doesn't exist that day.
    assert paris("30 2 * * *", "2026-03-28T12:00:00+01:00", 3) == [
        "2026-03-29T01:00:00+00:00",  # 03:00 CEST
        "2026-03-30T00:30:00+00:00",  # 02:30 CEST
        "2026-03-31T00:30:00+00:00",
    ]
    # A daily 09:00 keeps its local time across the change: 08:00 UTC, then 07:00 UTC.
    assert paris("0 9 * * *", "2026-03-28T12:00:00+01:00", 2) == ["2026-03-29T07:00:00+00:00", "2026-03-30T07:00:00+00:00"]


def test_fall_back_in_paris_fires_a_daily_time_once_and_a_frequent_one_in_both_copies() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    assert paris("30 2 * * *", "2026-10-24T12:00:00+02:00", 2) == ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
    assert paris("*/30 * * * *", "2026-10-25T01:40:00+02:00", 5) == [
        "2026-10-25T00:00:00+00:00",  # 02:00 CEST
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST
        "2026-10-25T01:00:00+00:00",  # 02:00 CET
        "2026-10-25T01:30:00+00:00",  # 02:30 CET
        "2026-10-25T02:00:00+00:00",  # 03:00 CET
    ]


@pytest.mark.parametrize(
    ("catch_up", "expected_missed"),
    [("all", 100 - 60), ("once", 1), ("skip", 0)],
)
def test_catch_up_policies_after_an_outage(catch_up: str, expected_missed: int) -> None:
    """Last fired 100 s ago, every=1: the 60 recent ticks always fire; the older 40 follow the policy."""
    entry = make_schedule("t", every=1, catch_up=catch_up)
    with freeze_time("2026-01-01T12:00:00Z"):
        now = datetime.now(UTC)
        ticks = due_ticks(entry, now - timedelta(seconds=100), now)
    recent = int(TAKEOVER_GRACE.total_seconds())
    assert len(ticks) == recent + expected_missed
    assert ticks == sorted(set(ticks))
    assert ticks[-1] == now
    if expected_missed == 1:
        assert ticks[0] == now - TAKEOVER_GRACE  # the latest of the missed ones
    assert ticks[-recent:] == [now - timedelta(seconds=s) for s in range(recent - 1, -1, -1)]


def test_a_takeover_fires_every_tick_since_the_last_one_fired_whatever_the_policy() -> None:
    entry = make_schedule("t", every=1, catch_up="skip")
    now = at("2026-01-01T12:00:10.5+00:00")
    assert due_ticks(entry, at("2026-01-01T12:00:07+00:00"), now) == [at(f"2026-01-01T12:00:{s:02}+00:00") for s in (8, 9, 10)]
    assert due_ticks(entry, at("2026-01-01T12:00:10+00:00"), now) == []
    assert due_ticks(entry, None, now) == []  # never fired: nothing owed


def test_catch_up_once_on_a_cron_schedule_finds_the_latest_missed_tick() -> None:
    entry = make_schedule("t", cron="0 3 * * *", timezone="Europe/Paris", catch_up="once")
    now = at("2026-03-31T12:00:00+02:00")
    assert due_ticks(entry, at("2026-03-20T03:00:00+01:00"), now) == [at("2026-03-31T03:00:00+02:00")]


def test_all_is_capped_at_the_latest_max_catch_up_ticks() -> None:
    from taskq.schedules import MAX_CATCH_UP

    entry = make_schedule("t", every=1, catch_up="all")
    now = at("2026-01-01T12:00:00+00:00")
    ticks = due_ticks(entry, now - timedelta(hours=2), now)
    assert len(ticks) == MAX_CATCH_UP + int(TAKEOVER_GRACE.total_seconds())


def test_tick_ids_are_deterministic_and_parse_back() -> None:
    tick = at("2026-03-29T03:00:00+02:00")
    assert tick_id("reports.nightly", tick) == "reports.nightly@2026-03-29T01:00:00Z"
    assert parse_tick(tick_id("x", tick).split("@", 1)[1]) == tick


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"cron": "61 * * * *"}, "malformed cron expression '61 * * * *'"),
        ({"cron": "* * *"}, "malformed cron expression"),
        ({"cron": "0 3 * * *", "timezone": "Europe/Pariss"}, "unknown timezone 'Europe/Pariss'"),
        ({"every": 0}, "every= must be"),
        ({"every": float("nan")}, "every= must be"),
        ({}, "exactly one of"),
        ({"every": 5, "cron": "* * * * *"}, "exactly one of"),
        ({"every": 5, "timezone": "UTC"}, "timezone= goes with cron="),
        ({"every": 5, "catch_up": "twice"}, "catch_up must be one of"),
        ({"every": 5, "priority": 300}, "priority must be"),
    ],
)
def test_bad_schedules_fail_at_decoration_and_register_nothing(arguments: dict[str, object], words: str) -> None:
    app = App("sched-test", broker="memory://")
    with pytest.raises(ConfigurationError, match=words.replace("*", r"\*")):
        @app.periodic(**arguments)  # type: ignore[arg-type]
        def tick() -> None: ...
    assert app.tasks == {} and app.schedules == {}


def test_periodic_registers_the_task_and_its_schedule() -> None:
    app = App("sched-test", broker="memory://")

    @app.periodic(cron="*/5 * * * *", timezone="Europe/Paris", args=(1,), queue="reports", name="report")
    def report(n: int) -> int:
        return n

    assert app.tasks["report"].options.queue == "reports"
    assert app.schedules["report"].args == (1,) and app.schedules["report"].trigger.describe() == "cron '*/5 * * * *' Europe/Paris"
    app.schedule(report, every=60, name="report.hourly", kwargs={"n": 2})
    with pytest.raises(ConfigurationError, match="two schedules are named 'report'"):
        app.schedule("report", every=10)


def test_the_banner_lists_each_schedule_with_its_next_run_soonest_first() -> None:
    from taskq.cli.scheduler import banner

    app = App("banner-test", broker="memory://")

    @app.periodic(cron="0 3 * * *", timezone="Europe/Paris")
    def nightly() -> None: ...

    @app.periodic(every=30, name="often")
    def often() -> None: ...

    text = banner(app, at("2026-03-28T12:00:10+00:00"))
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(". ")]
    assert lines == [
        ". often (every 30s, catch_up=once) -> often; next 2026-03-28 12:00:30 UTC",
        f". {nightly.options.name} (cron '0 3 * * *' Europe/Paris, catch_up=once) -> {nightly.options.name}; next 2026-03-29 01:00:00 UTC",
    ]
    assert "banner-test" in text and "memory://" in text


def test_status_lines_name_the_leader_or_say_the_lease_is_free() -> None:
    from taskq.scheduler import LeaderReport, ScheduleReport
    from taskq.status import schedule_lines

    entry = ScheduleReport("tick", "app.tick", "every 1s", "once", "2026-01-01T12:00:01+00:00", None)
    assert schedule_lines([entry], LeaderReport(True, "web-1", 42, "2026-01-01T11:00:00+00:00")) == [
        "scheduler leader: web-1 pid 42, since 2026-01-01T11:00:00+00:00",
        "  tick (every 1s) -> app.tick: next 2026-01-01T12:00:01+00:00, last fired never",
    ]
    assert schedule_lines([], LeaderReport(False, "web-1", 42, "x"))[0] == "scheduler leader: none (the lease is free; the last was web-1 pid 42, since x)"
    assert schedule_lines([], LeaderReport(False))[0] == "scheduler leader: none (the lease is free)"
