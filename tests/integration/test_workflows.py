"""Chains, groups and chords across real worker processes, on RabbitMQ and the embedded broker:
results in order, a failing step named, and the crash cases (a SIGKILLed child mid-chain
re-runs a step and the rest still runs; a chord's callback runs exactly once however its
members' workers die)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from taskq import ConfigurationError, GroupError, TaskError, chain, chord, group
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


@pytest.fixture
def wf_app(broker_url):
    from tests.support.apps_workflows import app

    app.use_broker(broker_url)
    yield app
    app.close()


@pytest.fixture
def results_url(tmp_path):
    return f"sqlite://{tmp_path / 'results.db'}"


@pytest.fixture
def wf_worker(start_worker, queue_name):
    def start(results: str = "", concurrency: int = 1, **env: str):
        return start_worker([queue_name], concurrency, app="tests.support.apps_workflows:app",
                            extra_env={"TASKQ_TEST_RESULTS": results, **env})

    return start


def runs(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_chain_passes_each_result_on_and_needs_no_result_store(wf_app, wf_worker, queue_name):
    from tests.support.apps_workflows import add, mul

    wf_worker("")  # a worker without a state store
    on = {"queue": queue_name}
    handle = (add.s(2, 3).set(**on) | mul.s(4).set(**on) | add.s(1).set(**on)).delay()
    assert handle.get(timeout=30) == 21
    assert chain(add.s(1, 1).set(**on), add.si(10, 10).set(**on)).delay().get(timeout=30) == 20


def test_a_failing_step_stops_the_chain_and_get_names_it(wf_app, wf_worker, queue_name, tmp_path):
    from tests.support.apps_workflows import add, fail, record

    wf_worker()
    after = tmp_path / "after"
    on = {"queue": queue_name}
    handle = chain(add.s(1, 1).set(**on), fail.s().set(**on), record.s(str(after)).set(**on)).delay()
    with pytest.raises(TaskError) as raised:
        handle.get(timeout=30)
    assert raised.value.exc_type == "ValueError"
    assert raised.value.step == {"index": 1, "task": fail.name}
    assert "workflow step 1" in str(raised.value)
    # The step after the failure was never published: the dead letter holds the failed step.
    assert not after.exists()


def test_a_group_gives_its_results_in_order_and_reports_failures_per_member(wf_app, wf_worker, queue_name):
    from tests.support.apps_workflows import add, fail

    wf_worker(concurrency=2)
    on = {"queue": queue_name}
    assert group(add.s(i, i).set(**on) for i in range(100)).delay().get(timeout=60) == [2 * i for i in range(100)]
    mixed = group(add.s(1, 2).set(**on), fail.s("x").set(**on), add.s(3, 4).set(**on)).delay()
    with pytest.raises(GroupError) as raised:
        mixed.get(timeout=30)
    results = raised.value.results
    assert results[0] == 3 and results[2] == 7 and isinstance(results[1], TaskError)
    assert raised.value.failed == [1]


def test_a_chord_calls_back_once_with_every_result(wf_app, wf_worker, queue_name, results_url, tmp_path):
    from tests.support.apps_workflows import add, total

    runs_file = tmp_path / "callback-runs"
    wf_worker(results_url, concurrency=2)
    on = {"queue": queue_name}
    handle = chord(group(add.s(i, 1).set(**on) for i in range(10)), total.s(str(runs_file)).set(**on)).delay()
    assert handle.get(timeout=60) == sum(i + 1 for i in range(10))
    assert runs(runs_file) == [repr([i + 1 for i in range(10)])]


def test_a_chord_needs_a_state_store(broker_url):
    from taskq import App

    plain = App("tests-workflows-plain", broker=broker_url)

    @plain.task
    def one() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="results="):
        chord([one.s()], one.s()).delay()


def test_a_member_failing_for_good_calls_link_error_once_and_fails_the_chord(
        wf_app, wf_worker, queue_name, results_url, tmp_path):
    from tests.support.apps_workflows import add, fail, record, total

    errors, callbacks = tmp_path / "errors", tmp_path / "callbacks"
    wf_worker(results_url, concurrency=2)
    on = {"queue": queue_name}
    members = [add.s(1, 1).set(**on), fail.s("a").set(**on), fail.s("b").set(**on)]
    handle = chord(members, total.s(str(callbacks)).set(**on), link_error=record.s(str(errors)).set(**on)).delay()
    with pytest.raises(TaskError) as raised:
        handle.get(timeout=30)
    assert raised.value.step is not None and raised.value.step["member"] in (1, 2)
    wait_until(errors.exists, timeout=30, what="the error callback")
    # Both failures reached a settle before the error callback is claimed: once both are dead letters,
    # a second error callback (if any) would already be queued. Wait for both, then count.
    wait_until(lambda: _dead_count(wf_app, queue_name) == 2, timeout=30, what="both failed members dead-lettered")
    wait_until(lambda: _ready(wf_app, queue_name) == 0, timeout=30, what="the queue drained")
    assert len(runs(errors)) == 1
    assert not callbacks.exists()


def _dead_count(app, queue_name: str) -> int:
    from taskq.dead import list_dead

    return len(list_dead(app.broker, queue_name))


def _ready(app, queue_name: str) -> int:
    from kombu import Connection

    from taskq.broker import queue_counts

    with Connection(app.broker.url) as connection:
        return queue_counts(connection, queue_name)[0]


# -- crashes --------------------------------------------------------------------------------


def test_a_child_killed_mid_chain_reruns_that_step_and_the_rest_still_runs(
        wf_app, wf_worker, queue_name, tmp_path):
    from tests.support.apps_workflows import add, hang_first, record

    worker = wf_worker()
    marker, before, after = tmp_path / "pid", tmp_path / "before", tmp_path / "after"
    on = {"queue": queue_name}
    handle = chain(add.s(1, 2).set(**on), record.s(str(before)).set(**on), hang_first.s(str(marker)).set(**on),
                   record.s(str(after)).set(**on), add.s(10).set(**on)).delay()
    wait_until(marker.exists, timeout=30, what="the step that hangs")
    os.kill(int(marker.read_text()), signal.SIGKILL)
    assert handle.get(timeout=60) == 13
    assert runs(before) == ["3"] and runs(after) == ["3"]  # the steps around the crash ran once each
    assert worker.process.poll() is None


def test_a_chord_callback_runs_once_though_member_children_are_killed(
        wf_app, wf_worker, queue_name, results_url, tmp_path):
    """Members killed mid-run run twice; the member whose join completes the chord is killed after
    the join, before it published the callback or acked: its re-run joins again (counted once)
    and publishes the callback, which runs once."""
    from tests.support.apps_workflows import add, hang_first, total

    callbacks, crashed = tmp_path / "callbacks", tmp_path / "crashed"
    wf_worker(results_url, concurrency=2, TASKQ_TEST_CRASH_MARKER=str(crashed))
    markers = [tmp_path / f"member-{i}" for i in range(3)]
    on = {"queue": queue_name}
    members = [hang_first.s(i, str(marker)).set(**on) for i, marker in enumerate(markers)]
    members += [add.s(i, 0).set(**on) for i in range(3, 6)]
    handle = chord(members, total.s(str(callbacks)).set(**on)).delay()
    for marker in markers:
        wait_until(marker.exists, timeout=60, what=f"member {marker.name} running")
        os.kill(int(marker.read_text()), signal.SIGKILL)
    assert handle.get(timeout=90) == sum(range(6))
    assert crashed.exists(), "the crash after the join never happened: the test proved nothing"
    wait_until(lambda: _ready(wf_app, queue_name) == 0, timeout=30, what="the queue drained")
    assert runs(callbacks) == [repr(list(range(6)))]


# -- the stores' join and claim ---------------------------------------------------------------


def test_the_sqlite_and_redis_stores_join_idempotently_and_claim_once(tmp_path):
    import uuid

    import redis

    from taskq.state.redis import RedisStore
    from taskq.state.sqlite import SQLiteStore
    from tests.unit.test_workflows_unit import check_join_and_claim

    check_join_and_claim(SQLiteStore(str(tmp_path / "results.db")))
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable")
    prefix = f"taskq-test:{uuid.uuid4().hex[:12]}:"
    check_join_and_claim(RedisStore(url, prefix=prefix, retention=60))
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
