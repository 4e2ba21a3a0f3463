"""``rate_limit`` holds across worker processes: judged from the tasks' own start times."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from taskq.state.limits import SQLiteRateSlots
from taskq.state.sqlite import SQLiteStore
from tests.support.waiting import wait_until

TASKS = 60


def starts(path: Path) -> list[tuple[float, int]]:
    if not path.exists():
        return []
    return [(float(t), int(pid)) for t, pid in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.both_brokers
def test_the_rate_limit_is_the_clusters_total_not_each_workers(broker_url, start_worker, queue_name, results_url,
                                                                tmp_path):
    from tests.support.apps_limits import RATE, app, limited

    app.use_broker(broker_url)
    env = {"TASKQ_TEST_RESULTS": results_url}
    for _ in range(2):  # two worker processes (two children each): four consumers share one limit
        start_worker([queue_name], 2, app="tests.support.apps_limits:app", extra_env=env)
    record = tmp_path / "starts"
    try:
        for _ in range(TASKS):
            limited.apply_async((str(record),), queue=queue_name)
        wait_until(lambda: len(starts(record)) >= TASKS, timeout=60, what=f"{TASKS} starts")
    finally:
        app.close()
    seen = starts(record)
    times = sorted(t for t, _ in seen)
    assert len(seen) == TASKS and len({pid for _, pid in seen}) >= 2  # each ran once, on several processes
    # Slots are 1/RATE apart and a task never starts before its slot (within the tolerance), so
    # N starts span at least (N - 1)/RATE seconds; one slot of slack for the tolerances. A
    # per-worker limit would do these in half that, no limit in a fraction of a second.
    assert TASKS - 1 <= RATE * (times[-1] - times[0]) + 1, f"{TASKS} starts in {times[-1] - times[0]:.3f} s"


def _reserve_many(path: str, count: int, out: "multiprocessing.Queue[list[float]]") -> None:
    slots = SQLiteRateSlots(SQLiteStore(path), clock=lambda: 1000.0)
    out.put([slots.reserve("k", 0.25) for _ in range(count)])


def test_sqlite_slots_are_atomic_across_processes(tmp_path):
    path = str(tmp_path / "results.db")
    SQLiteStore(path).read("nothing")  # the file is made as a store first
    out: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_reserve_many, args=(path, 50, out)) for _ in range(3)]
    for worker in workers:
        worker.start()
    got = sorted(slot for _ in workers for slot in out.get(timeout=30))
    for worker in workers:
        worker.join(30)
    assert got == [1000.0 + 0.25 * n for n in range(150)]  # no slot given twice, none skipped
