"""The state store across real worker processes, on the real RabbitMQ, with the real Redis
(127.0.0.1:6379, a key prefix per test) and a SQLite file: what a worker records, another
process reads; a killed child's task goes back to STARTED, never SUCCEEDED twice; a store
that goes away dead-letters the task rather than acking it; bad input is one clear error."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from taskq import StateStoreError, TaskError, TaskState
from taskq.dead import list_dead, replay
from taskq.state import StoredResult, open_store
from tests.support import ROOT
from tests.support.waiting import wait_until

@pytest.fixture
def state_app(broker_url):
    from tests.support.apps_state import app

    app.use_broker(broker_url)
    yield app
    app.close()


@pytest.fixture
def state_worker(start_worker, queue_name):
    def start(results: str, concurrency: int = 1):
        return start_worker([queue_name], concurrency, app="tests.support.apps_state:app",
                            extra_env={"TASKQ_TEST_RESULTS": results})

    return start


def read(results_url: str, task_id: str) -> StoredResult:
    """A read from this process: not the worker's, and not the sender's handle."""
    return StoredResult(open_store(results_url), task_id)


def test_any_process_reads_the_state_and_result_the_worker_recorded(state_app, state_worker, queue_name, results_url):
    from tests.support.apps_state import add

    worker = state_worker(results_url)
    sent = add.apply_async((2, 3), queue=queue_name)
    assert sent.get(timeout=20) == 5  # the sender's own RPC reply, unchanged
    stored = read(results_url, sent.id)  # the store was written before the reply was sent
    assert stored.state is TaskState.SUCCEEDED and stored.get(timeout=1) == 5
    assert stored.attempts == 1 and stored.record.task == add.name and stored.record.queue == queue_name
    assert stored.record.arguments() == ([2, 3], {})
    assert int(stored.worker.rsplit(":", 1)[1]) in worker.child_pids()
    assert stored.received_at <= stored.started_at <= stored.finished_at <= time.time()
    assert [entry.state for entry in stored.timeline] == [TaskState.STARTED, TaskState.SUCCEEDED]


def test_progress_is_readable_while_the_task_runs(state_app, state_worker, queue_name, results_url, tmp_path):
    from tests.support.apps_state import resize

    state_worker(results_url)
    go = tmp_path / "go"
    sent = resize.apply_async((str(go),), queue=queue_name)
    wait_until(lambda: read(results_url, sent.id).progress == 0.4, timeout=20, what="progress 0.4")
    running = read(results_url, sent.id)
    assert running.state is TaskState.STARTED and running.meta == {"step": "resize"} and not running.ready()
    go.touch()
    assert read(results_url, sent.id).get(timeout=20) == "resized"


def test_a_failure_is_failed_with_the_remote_traceback(state_app, state_worker, queue_name, results_url):
    from tests.support.apps_state import fail

    state_worker(results_url)
    sent = fail.apply_async(("boom",), queue=queue_name)
    with pytest.raises(TaskError):
        sent.get(timeout=20)
    with pytest.raises(TaskError) as error:
        read(results_url, sent.id).get(timeout=20)
    assert error.value.exc_type == "ValueError" and error.value.exc_message == "boom"
    assert 'raise ValueError(message)' in error.value.remote_traceback
    stored = read(results_url, sent.id)
    assert stored.state is TaskState.FAILED and stored.record.reason == "failed"


def test_ignore_result_keeps_the_state_not_the_value(state_app, state_worker, queue_name, results_url):
    from tests.support.apps_state import quiet

    state_worker(results_url)
    sent = quiet.apply_async((7,), queue=queue_name)
    wait_until(lambda: read(results_url, sent.id).ready(), timeout=20, what="quiet done")
    stored = read(results_url, sent.id)
    assert stored.state is TaskState.SUCCEEDED and stored.record.reply is None


def test_an_unknown_id_is_pending_and_get_times_out_saying_so(results_url):
    stored = read(results_url, "no-such-task")
    assert stored.state is TaskState.PENDING
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="has no record of it .PENDING.: no worker has taken it yet"):
        stored.get(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5


def test_a_child_killed_mid_task_goes_back_to_started_on_the_next_and_succeeds_once(
        state_app, state_worker, queue_name, results_url, tmp_path):
    from tests.support.apps_state import hang_once

    worker = state_worker(results_url)
    marker = tmp_path / "first-run"
    sent = hang_once.apply_async((str(marker),), queue=queue_name)
    wait_until(marker.exists, timeout=20, what="the first run")
    first = int(marker.read_text())
    assert read(results_url, sent.id).state is TaskState.STARTED
    os.kill(first, signal.SIGKILL)  # the broker requeues the unacked message; a new child takes it
    second = sent.get(timeout=30)
    assert second != first
    stored = read(results_url, sent.id)
    assert stored.state is TaskState.SUCCEEDED and stored.get(timeout=1) == second
    timeline = stored.timeline
    assert [entry.state for entry in timeline] == [TaskState.STARTED, TaskState.STARTED, TaskState.SUCCEEDED]
    assert timeline[0].worker.endswith(f":{first}") and not timeline[0].redelivered
    assert timeline[1].worker.endswith(f":{second}") and timeline[1].redelivered
    assert worker.process.poll() is None


# -- a store that goes away -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own, on a free port: the test stops it (never the machine's 6379)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
                    "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
                    "--pidfile", str(tmp_path / "redis.pid")], check=True, capture_output=True)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    wait_until(lambda: _pings(client), timeout=10, what="the private redis-server")

    def stop() -> None:
        if _pings(client):
            try:
                client.shutdown(nosave=True)
            except redis.ConnectionError:  # it closes the connection as it goes
                pass
        wait_until(lambda: not _pings(client), timeout=10, what="the private redis-server stopped")

    yield f"redis://127.0.0.1:{port}/0", stop
    stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_a_store_gone_mid_task_dead_letters_the_success_instead_of_acking_it(
        state_app, state_worker, queue_name, private_redis, tmp_path):
    from tests.support.apps_state import resize

    url, stop_redis = private_redis
    worker = state_worker(url)
    go = tmp_path / "go"
    sent = resize.apply_async((str(go),), queue=queue_name)
    wait_until(lambda: read(url, sent.id).state is TaskState.STARTED, timeout=20, what="STARTED recorded")
    stop_redis()
    go.touch()  # the task returns; its SUCCEEDED can't be written
    with pytest.raises(TaskError) as error:
        sent.get(timeout=30)
    assert error.value.exc_type == "taskq.DeadLettered" and "state-store-unavailable" in error.value.exc_message
    total, letters = list_dead(state_app.broker, queue_name)
    assert total == 1 and letters[0].reason == "state-store-unavailable" and letters[0].task_id == sent.id
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in letters[0].detail
    log = worker.log()
    assert log.count("state store write failed, retrying") == 4  # WRITE_ATTEMPTS - 1, with backoff between
    assert "the message goes to its dead-letter queue" in log
    # The caller who asks the store meanwhile gets one clear error, not a redis-py traceback.
    with pytest.raises(StateStoreError, match=r"cannot read the state store at redis://127\.0\.0\.1:\d+/0"):
        read(url, sent.id)
    assert worker.process.poll() is None


def test_a_store_down_before_the_run_keeps_the_task_for_a_replay(
        state_app, state_worker, queue_name, private_redis, tmp_path):
    from tests.support.apps_state import add

    url, stop_redis = private_redis
    state_worker(url)
    stop_redis()
    sent = add.apply_async((20, 22), queue=queue_name)
    with pytest.raises(TaskError, match="state-store-unavailable"):
        sent.get(timeout=30)
    assert [letter.task_id for letter in list_dead(state_app.broker, queue_name)[1]] == [sent.id]
    # Nothing was lost: once a store is back, the replay runs it and it is recorded.
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
                    "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], check=True, capture_output=True)
    wait_until(lambda: _pings(redis.Redis(port=port, socket_connect_timeout=1)), timeout=10, what="redis back")
    assert [letter.task_id for letter in replay(state_app.broker, queue_name, sent.id)] == [sent.id]
    assert read(url, sent.id).get(timeout=30) == 42


# -- bad input ------------------------------------------------------------------------------


def test_a_damaged_sqlite_file_is_one_clear_error(tmp_path):
    damaged = tmp_path / "results.db"
    damaged.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StateStoreError, match="damaged or not a SQLite database"):
        read(f"sqlite://{damaged}", "any-id")
    command = run_cli("result", "any-id", "--results", f"sqlite://{damaged}")
    assert command.returncode == 1 and command.stderr.count("\n") == 1
    assert command.stderr.startswith("Error: cannot open the state store") and "Traceback" not in command.stderr
    assert damaged.read_bytes().startswith(b"this is not a database")  # left as it was


def test_reading_a_store_no_worker_made_yet_creates_nothing(tmp_path):
    missing = tmp_path / "not" / "yet" / "results.db"
    assert read(f"sqlite://{missing}", "any-id").state is TaskState.PENDING
    assert not (tmp_path / "not").exists()


def test_a_foreign_sqlite_database_is_refused_not_written_into(tmp_path):
    import sqlite3

    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(StateStoreError, match="not a taskq state store .it has the tables users."):
        read(f"sqlite://{foreign}", "any-id")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskq", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_cli_shows_state_waits_for_results_and_fails_with_the_traceback(
        state_app, state_worker, queue_name, results_url):
    from tests.support.apps_state import add, fail

    state_worker(results_url)
    good = add.apply_async((1, 2), queue=queue_name)
    bad = fail.apply_async(("nope",), queue=queue_name)
    waited = run_cli("result", good.id, "--results", results_url, "--wait", "--timeout", "20")
    assert waited.returncode == 0, waited.stderr
    assert f"{good.id}  {add.name}  SUCCEEDED  attempt=1" in waited.stdout and waited.stdout.rstrip().endswith("3")
    failed = run_cli("result", bad.id, "--results", results_url, "--wait", "--timeout", "20")
    assert failed.returncode == 1 and "FAILED" in failed.stdout and "ValueError: nope" in failed.stdout
    assert "raise ValueError(message)" in failed.stdout
    unknown = run_cli("result", "no-such-id", "--results", results_url, "--wait", "--timeout", "0.2")
    assert unknown.returncode == 4 and "PENDING" in unknown.stderr
    assert run_cli("result", "no-such-id", "--results", results_url).stdout.startswith("no-such-id  ?  PENDING")
