"""Revoke (docs/revoke.md): a revoked queued task never runs and is dead-lettered ``revoked``;
``terminate=True`` stops it while it runs on one of several children; RabbitMQ keeps
revocations across a worker restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskq import TaskRevoked
from tests.support.apps import record
from tests.support.reliability_fixtures import dead_letters
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def lines(path: Path, kind: str) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.startswith(kind + " ")]


def revoked_dead_letters(broker_url: str, queue_name: str) -> list[str]:
    return [m.headers.get("id") for m in dead_letters(broker_url, queue_name) if m.headers.get("reason") == "revoked"]


def test_a_revoked_queued_task_never_runs_and_is_dead_lettered(app, broker_url, queue_name, start_worker, tmp_path):
    start_worker([queue_name], concurrency=1)
    log = tmp_path / "runs"
    busy = record.apply_async((str(log), "busy", 1.0), queue=queue_name)
    wait_until(lambda: lines(log, "start"), what="the busy task to start")
    victim = record.apply_async((str(log), "victim"), queue=queue_name)  # queued behind the busy one
    victim.revoke()
    after = record.apply_async((str(log), "after"), queue=queue_name)
    with pytest.raises(TaskRevoked, match="revoked before it ran"):
        victim.get(timeout=30)
    busy.get(timeout=30)
    after.get(timeout=30)
    assert [row[1] for row in lines(log, "start")] == ["busy", "after"]
    assert revoked_dead_letters(broker_url, queue_name) == [victim.id]


def test_a_revoke_every_child_has_read_is_always_honoured(app, broker_url, queue_name, start_worker, tmp_path):
    """The race the docs promise about: each task is sent the moment both children logged that
    they read its revocation (the event awaited, no sleep), 10 times; none may run."""
    worker = start_worker([queue_name], concurrency=2)
    log = tmp_path / "runs"
    victims = []
    for i in range(10):
        task_id = f"race-{i}-{queue_name}"
        app.revoke(task_id)
        wait_until(lambda: worker.log().count(f'"revocation received", "task_id": "{task_id}"') >= 2
                   or worker.log().count(task_id) >= 2, what="both children to read the revocation")
        victims.append(record.apply_async((str(log), f"victim{i}"), queue=queue_name, task_id=task_id))
    for victim in victims:
        with pytest.raises(TaskRevoked):
            victim.get(timeout=30)
    assert lines(log, "start") == []
    assert sorted(revoked_dead_letters(broker_url, queue_name)) == sorted(v.id for v in victims)


def test_terminate_stops_the_task_running_on_one_of_three_children(app, broker_url, queue_name, start_worker,
                                                                    tmp_path):
    worker = start_worker([queue_name], concurrency=3)
    log = tmp_path / "runs"
    long_task = record.apply_async((str(log), "long", 600.0), queue=queue_name)
    started = wait_until(lambda: lines(log, "start"), what="the long task to start")
    long_pid = int(started[0][2])
    long_task.revoke(terminate=True)
    with pytest.raises(TaskRevoked, match="terminated while running"):
        long_task.get(timeout=30)  # bounded: far below the task's 600 s
    others = [record.apply_async((str(log), f"short{i}"), queue=queue_name) for i in range(6)]
    assert all(isinstance(result.get(timeout=30), int) for result in others)
    assert [row[1] for row in lines(log, "done") if row[1] == "long"] == []
    assert revoked_dead_letters(broker_url, queue_name) == [long_task.id]
    # The abandoning child was replaced: three children again, the old one gone.
    wait_until(lambda: len(worker.child_pids()) == 3 and long_pid not in worker.child_pids(),
               what="the supervisor to replace the abandoning child")


@pytest.mark.rabbitmq_only("the embedded broker has no streams: a revoke reaches the workers connected at the time")
def test_a_revoke_survives_a_worker_restart(app, broker_url, queue_name, start_worker, tmp_path):
    log = tmp_path / "runs"
    first = start_worker([queue_name], concurrency=1)
    first.stop()
    victim = record.apply_async((str(log), "victim"), queue=queue_name)
    victim.revoke()  # no worker is running
    start_worker([queue_name], concurrency=2)
    with pytest.raises(TaskRevoked):
        victim.get(timeout=30)
    assert lines(log, "start") == []
    assert revoked_dead_letters(broker_url, queue_name) == [victim.id]


def test_cli_revoke_refuses_a_malformed_id_in_one_line(broker_url):
    import subprocess
    import sys

    from tests.support import ROOT

    done = subprocess.run([sys.executable, "-m", "taskq", "revoke", "not an id", "-A", "tests.support.apps:app",
                           "--broker", broker_url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["Error: not a task id: 'not an id' (no spaces or control characters)"]
