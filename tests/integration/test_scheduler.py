"""Three schedulers, one leader, the leader SIGKILLed mid-way: every tick runs exactly once (issue 16).

Real processes (``taskq scheduler``, ``taskq worker``) on the real broker, RabbitMQ and embedded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kombu import Connection

from taskq import topology
from taskq.scheduler import fired_tick
from tests.support import ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]

#: Seconds a takeover may take after the leader is killed: SCHEDULER_LEASE_POLL (0.5) plus start-up slack.
TAKEOVER_BOUND = 5.0


def start_scheduler(broker_url: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "taskq", "scheduler", "-A", "tests.support.scheduler_app:app",
               "--broker", broker_url, "--log-format", "json"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def names(broker_url: str):
    app_name = f"sched{uuid.uuid4().hex[:10]}"
    queue = f"test.{app_name}"
    yield app_name, queue
    with Connection(broker_url) as connection:
        channel = connection.channel()
        for name in (queue, queue + ".dead", topology.last_tick_queue(app_name, "tick").name,
                     topology.schedule_status_queue(app_name, "tick").name,
                     topology.last_tick_queue(app_name, "ghost").name, topology.scheduler_leader_queue(app_name).name,
                     topology.scheduler_lease_queue(app_name).name):
            try:
                channel.queue_delete(name)
            except Exception:
                channel = connection.channel()


class SchedulerRun:
    """A worker on the test's queue and ``count`` ``taskq scheduler`` processes, each with its log."""

    def __init__(self, broker_url: str, app_name: str, queue: str, tmp_path: Path, **extra_env: str) -> None:
        self.broker_url = broker_url
        self.runs_path = tmp_path / "runs.txt"
        self.tmp_path = tmp_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "TASKQ_TEST_SCHEDULER_APP": app_name,
                    "TASKQ_TEST_SCHEDULER_QUEUE": queue, "TASKQ_TEST_SCHEDULER_RUNS": str(self.runs_path), **extra_env}
        self.logs: list[Path] = []
        self.schedulers: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            log = self.tmp_path / f"scheduler-{len(self.logs)}.log"
            self.logs.append(log)
            self.schedulers.append(start_scheduler(self.broker_url, self.env, log))

    def leaders(self) -> list[int]:
        """The schedulers that ever led, by index."""
        return [index for index, log in enumerate(self.logs) if "scheduler leads" in log.read_text()]

    def runs(self) -> list[str]:
        return runs(self.runs_path)

    def stop(self) -> None:
        """SIGTERM every scheduler, then wait until the worker ran every tick they fired."""
        for process in self.schedulers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.schedulers:
            process.wait(20)
        fired = sum(log.read_text().count('"fired"') for log in self.logs)
        wait_until(lambda: len(self.runs()) >= fired, what="the worker to run every fired tick")

    def kill(self) -> None:
        for process in self.schedulers:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(10)

    def ticks_each_run_once(self) -> list[datetime]:
        """The ticks run, after checking none ran twice and none is missing between the first and the last."""
        ids = self.runs()
        assert len(ids) == len(set(ids)), f"a tick ran twice: {sorted(i for i in ids if ids.count(i) > 1)}"
        ticks = sorted(fired_tick(tick_id) for tick_id in ids)
        gaps = [(a.isoformat(), b.isoformat()) for a, b in zip(ticks, ticks[1:]) if b - a != timedelta(seconds=1)]
        assert not gaps, f"ticks missing between {gaps}"  # catch_up="all": even the takeover's are fired
        return ticks


@pytest.fixture
def scheduler_run(broker_url, names, start_worker, tmp_path):
    app_name, queue = names
    run = SchedulerRun(broker_url, app_name, queue, tmp_path)
    start_worker([queue], app="tests.support.scheduler_app:app", extra_env=run.env)
    yield run
    run.kill()


def test_three_schedulers_a_killed_leader_and_every_tick_runs_once(scheduler_run):
    run = scheduler_run
    run.start(3)
    first = wait_until(run.leaders, what="a leader")
    assert len(first) == 1, "two schedulers lead at once"
    leader = first[0]
    wait_until(lambda: len(run.runs()) >= 4, what="four ticks run")

    run.schedulers[leader].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    run.schedulers[leader].wait(10)
    successors = wait_until(lambda: [i for i in run.leaders() if i != leader], timeout=TAKEOVER_BOUND + 10, what="a new leader")
    takeover = time.monotonic() - killed_at
    assert len(successors) == 1, "two successors lead at once"
    before_kill = len(run.runs())
    wait_until(lambda: len(run.runs()) >= before_kill + 5, what="five more ticks run")
    run.stop()

    ticks = run.ticks_each_run_once()
    assert len(ticks) >= 9
    assert takeover < TAKEOVER_BOUND, f"takeover took {takeover:.1f} s"
    print(f"takeover after SIGKILL: {takeover:.2f} s; {len(ticks)} ticks, each run once")


def test_two_workers_with_embedded_schedulers_fire_each_tick_once(broker_url, names, start_worker, tmp_path):
    """``taskq worker --scheduler`` on two workers: two candidates for the lease, one fires."""
    run = SchedulerRun(broker_url, *names, tmp_path)
    workers = [start_worker([names[1]], app="tests.support.scheduler_app:app", extra_env=run.env, extra_args=("--scheduler",))
               for _ in range(2)]
    wait_until(lambda: len(run.runs()) >= 5, what="five ticks run")
    assert sum(w.log().count("scheduler leads") for w in workers) == 1  # (stopping one lets the other take over)
    leading = status(broker_url, run.env)
    assert leading["scheduler_leader"]["held"] and leading["scheduler_leader"]["pid"] in scheduler_pids(workers)
    [tick_schedule] = leading["schedules"]
    assert tick_schedule["name"] == "tick" and tick_schedule["last_fired"] is not None
    for worker in workers:
        assert worker.stop() == 0
    stopped = status(broker_url, run.env)
    assert not stopped["scheduler_leader"]["held"] and stopped["scheduler_leader"]["pid"] is not None
    ticks = run.ticks_each_run_once()
    assert fired_tick("x@" + stopped["schedules"][0]["last_fired"]) >= ticks[-1]
    assert all("scheduler:   one more process" in w.log() and ". tick (every 1s" in w.log() for w in workers)


def status(broker_url: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "taskq", "status", "-A", "tests.support.scheduler_app:app", "--broker", broker_url,
         "--wait", "0.2", "--counts", "amqp", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def scheduler_pids(workers) -> list[int]:
    return [pid for worker in workers for pid in worker.child_pids()]


def test_an_app_without_schedules_is_a_one_line_error(broker_url):
    result = subprocess.run(
        [sys.executable, "-m", "taskq", "scheduler", "-A", "tests.support.apps:app", "--broker", broker_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["Error: app 'tests' has no schedules (@app.periodic or app.schedule)"]


@pytest.mark.rabbitmq_only(reason="the embedded broker's lease belongs to a process, which a pause doesn't end")
def test_a_paused_leader_loses_its_lease_and_cannot_fire_beside_its_successor(scheduler_run):
    """SIGSTOP the leader: its heartbeats stop, the broker closes its connection and frees the lease,
    a follower leads. SIGCONT: the old leader's fires were on that closed connection, so none lands."""
    run = scheduler_run
    run.start(2)
    [leader] = wait_until(run.leaders, what="a leader")
    wait_until(lambda: len(run.runs()) >= 2, what="two ticks run")
    run.schedulers[leader].send_signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    wait_until(lambda: len(run.leaders()) == 2, timeout=30, what="the follower to take over")
    takeover = time.monotonic() - paused_at
    run.schedulers[leader].send_signal(signal.SIGCONT)
    resumed = len(run.runs())
    wait_until(lambda: "no longer leads" in run.logs[leader].read_text(), what="the paused leader to notice")
    wait_until(lambda: len(run.runs()) >= resumed + 3, what="three more ticks run")
    run.stop()
    ticks = run.ticks_each_run_once()
    # Two missed heartbeats of SCHEDULER_HEARTBEAT (2 s) and the broker's own timing.
    assert takeover < 15, f"takeover after a pause took {takeover:.1f} s"
    print(f"takeover after SIGSTOP: {takeover:.2f} s; {len(ticks)} ticks, each run once")


def test_a_schedule_of_an_unknown_task_is_dead_lettered(broker_url, names, start_worker, tmp_path):
    app_name, queue = names
    run = SchedulerRun(broker_url, app_name, queue, tmp_path, TASKQ_TEST_SCHEDULER_GHOST="1")
    start_worker([queue], app="tests.support.scheduler_app:app", extra_env=run.env)
    run.start(1)
    try:
        with Connection(broker_url) as connection:
            channel = connection.channel()

            def dead_letter():
                try:
                    return channel.basic_get(queue + ".dead", no_ack=True)
                except Exception:  # not declared yet
                    return None

            message = wait_until(dead_letter, what="a dead letter in " + queue + ".dead")
            assert message.headers["task"] == "tests.no_such_task"
            assert message.properties["message_id"].startswith("ghost@")
            assert "unknown-task" in str(message.headers)
    finally:
        run.kill()


def test_a_reader_holding_a_peek_at_takeover_costs_no_tick(scheduler_run, broker_url, monkeypatch):
    """A reader (taskq status, the dashboard) holds its peek open while the leader is SIGKILLed
    and a successor takes over a tick later: the successor must still find the last fire and
    fire the missed tick. (Reading the last-tick queue itself, it found it hidden and lost it.)"""
    import threading

    from kombu.message import Message

    from taskq import App, scheduler

    run = scheduler_run
    app = App(run.env["TASKQ_TEST_SCHEDULER_APP"], broker=broker_url)
    app.schedule("tests.support.scheduler_app.tick", every=1, catch_up="all", name="tick")
    held, release = threading.Event(), threading.Event()
    requeue = Message.requeue

    def held_requeue(message):  # the reader stops here, its peek not yet given back
        held.set()
        release.wait(60)
        requeue(message)

    run.start(1)
    wait_until(lambda: len(run.runs()) >= 3, what="three ticks run")
    monkeypatch.setattr(Message, "requeue", held_requeue)
    reader = threading.Thread(target=scheduler.report, args=(app,), daemon=True)
    reader.start()
    assert held.wait(30), "the reader never peeked"
    run.schedulers[0].send_signal(signal.SIGKILL)
    run.schedulers[0].wait(10)
    last = max(fired_tick(tick_id) for tick_id in run.runs())
    wait_until(lambda: datetime.now(last.tzinfo) > last + timedelta(seconds=2), what="a tick missed by no leader")
    run.start(1)
    wait_until(lambda: 1 in run.leaders(), what="the successor to lead")
    before = len(run.runs())
    wait_until(lambda: len(run.runs()) >= before + 3, what="three more ticks run")
    release.set()
    reader.join(30)
    run.stop()
    run.ticks_each_run_once()


def test_reading_the_schedules_every_few_seconds_leaks_no_channel(scheduler_run, broker_url):
    """A dashboard calls report_on on its one connection again and again: each call closes what it opened."""
    from taskq import App, scheduler

    run = scheduler_run
    app = App(run.env["TASKQ_TEST_SCHEDULER_APP"], broker=broker_url)
    app.schedule("tests.support.scheduler_app.tick", every=1, catch_up="all", name="tick")
    run.start(1)
    wait_until(lambda: len(run.runs()) >= 2, what="two ticks run")
    with app.broker.connect() as connection:
        scheduler.report_on(connection, app)  # the first call may leave kombu's own channel pool set up
        before = open_channels(connection)
        for _ in range(5):
            schedules, leader = scheduler.report_on(connection, app)
            assert leader.held and schedules[0].last_fired is not None
        assert open_channels(connection) == before


def open_channels(connection: Connection) -> int:
    """The channels of this connection as the broker sees them (rabbitmqctl), or the embedded transport's."""
    if connection.transport.driver_type != "amqp":
        return len(connection.transport.channels)
    from tests.support.cli_helpers import rabbitmqctl_rows

    port = connection.connection.sock.getsockname()[1]
    return sum(1 for row in rabbitmqctl_rows("list_channels", "name") if f":{port} ->" in row["name"])
