"""At least once, whatever dies: children SIGKILLed mid-run lose no task."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid

from tests.conftest import queue_state, wait_until
from tests.reliability_fixtures import rapp  # noqa: F401  (a fixture)

TASKS = 400
KILLS = 4


def test_every_task_runs_although_children_are_killed(rapp, queue_name, start_worker, tmp_path, amqp):
    from tests.apps_reliability import touch

    worker = start_worker([queue_name], concurrency=4, app="tests.apps_reliability:app")
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
