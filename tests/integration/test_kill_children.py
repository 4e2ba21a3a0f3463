"""At least once, whatever dies: children SIGKILLed mid-run lose no task; children die with their supervisor."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from taskq.worker import parent_death
from tests.support import ROOT
from tests.support.apps import record
from tests.support.brokers import queue_state
from tests.support.cli_helpers import ready_and_unacked
from tests.support.reliability_fixtures import rapp  # noqa: F401  (a fixture)
from tests.support.waiting import wait_until

TASKS = 400
KILLS = 4


def test_every_task_runs_although_children_are_killed(rapp, queue_name, start_worker, tmp_path, amqp):
    from tests.support.apps_reliability import touch

    worker = start_worker([queue_name], concurrency=4, app="tests.support.apps_reliability:app")
    tokens = [f"t{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(TASKS)]
    for token in tokens:
        touch.apply_async((str(tmp_path), token, 0.05), queue=queue_name)
    rng = random.Random()
    killed = []
    for _ in range(KILLS):
        wait_until(lambda: len(worker.child_pids()) == 4, what="four children")
        victim = rng.choice(worker.child_pids())
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        # Only a kill while work is left can lose something: check this one could have.
        assert queue_state(amqp, queue_name)[0] > 0, "the queue drained before the kills: make tasks slower"
        time.sleep(0.25)  # pacing between kills, not synchronisation: the waits above are the sync
    wait_until(lambda: all((tmp_path / t).exists() for t in tokens), timeout=60, what="every task's side effect")
    wait_until(lambda: queue_state(amqp, queue_name)[0] == 0, what="the queue drained")
    runs = {t: (tmp_path / t).read_text().count("\n") for t in tokens}
    duplicates = sum(1 for n in runs.values() if n > 1)
    print(f"\n{TASKS} tasks, {KILLS} children killed ({killed}); ran twice: {duplicates}")
    assert all(n >= 1 for n in runs.values())
    assert duplicates <= KILLS  # only a task killed between its side effect and its ack runs again
    assert worker.process.poll() is None


def gone(pid: int) -> bool:
    """The process exited. An orphan is reaped by whoever adopted it, maybe never (a
    container's pid 1 may not reap): a zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def kill_unless_gone(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.broker
@pytest.mark.both_brokers
def test_children_die_with_a_sigkilled_supervisor_and_the_running_task_goes_back(
    app, queue_name, start_worker, tmp_path, broker_url
):
    worker = start_worker([queue_name], concurrency=2)
    children = worker.child_pids()
    assert len(children) == 2
    log = tmp_path / "runs"
    record.apply_async((str(log), "running", 120.0), queue=queue_name)
    wait_until(lambda: "start running" in (log.read_text() if log.exists() else ""), timeout=60,
               what="the task to start")
    try:
        os.kill(worker.pid, signal.SIGKILL)  # the supervisor only
        worker.process.wait(10)
        wait_until(lambda: all(gone(pid) for pid in children), timeout=60, what="the children to exit")
    finally:  # on the old code they live on, consuming: don't leave them behind
        for pid in children:
            kill_unless_gone(pid)
    # Nothing lost: the task that was running is back in its queue, ready for another worker.
    wait_until(lambda: ready_and_unacked(broker_url, queue_name) == (1, 0), timeout=60,
               what="the running task back in its queue")
    assert "done running" not in log.read_text()


ORPHAN = """
import os, signal, sys
from taskq.worker import parent_death

parent = os.getpid()
if os.fork() == 0:
    getattr(parent_death, sys.argv[1])(parent)
    print(os.getpid(), flush=True)  # watching: the test may kill the parent
    signal.pause()
signal.pause()
"""


@pytest.mark.parametrize("how", ["die_with_parent", "exit_when_orphaned"])
def test_a_child_ends_when_its_parent_is_sigkilled(how):
    # die_with_parent: the kernel's PR_SET_PDEATHSIG on Linux; exit_when_orphaned: the
    # getppid() watch used where there is no such thing, run here too so it is tested.
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN, how], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait(10)
    try:
        wait_until(lambda: gone(child), timeout=30, what="the orphan to exit")
    finally:
        kill_unless_gone(child)


def test_a_child_whose_parent_died_before_it_asked_exits_at_once():
    # The race with fork: the supervisor died before the child set PR_SET_PDEATHSIG, so
    # the kernel will never send it; the child is already someone else's.
    done = subprocess.run(
        [sys.executable, "-c", "import os; from taskq.worker import parent_death as p; p.die_with_parent(os.getppid() + 1)"],
        cwd=ROOT, timeout=30,
    )
    assert done.returncode == parent_death.EXIT_ORPHANED
