"""A damaged, replaced or foreign ``broker.db`` is refused with one line, never reused.

Before, a file truncated to 0 bytes was taken for a new broker (200 queued tasks gone
without a word) and a damaged one gave raw sqlite3 tracebacks. Each damage below is done
to a real store holding 200 queued tasks; the producer, ``taskq worker`` and ``taskq
status`` must each refuse it with one line naming the file, and leave it as it was.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from taskq.embedded.schema import APPLICATION_ID
from tests.support import ROOT
from tests.support.cli_helpers import taskq
from tests.support.waiting import wait_until

QUEUED = 200
PAGE_SIZE = 4096

PRODUCE = f"""
from tests.support.apps import add
for i in range({QUEUED}):
    add.delay(i, i)
"""
# What a program using the API sees: a taskq.BrokerError, on one line, and nothing else.
DELAY_ONE = """
import taskq
from tests.support.apps import add
try:
    add.delay(1, 2)
except Exception as exc:
    kind = type(exc)
    named = "BrokerError" if isinstance(exc, getattr(taskq, "BrokerError", ())) else f"{kind.__module__}.{kind.__name__}"
    print(f"{named}: {exc}")
    raise SystemExit(3)
print("sent")
"""


def python(code: str, url: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "TASKQ_BROKER_URL": url},
        capture_output=True, text=True, timeout=timeout,
    )


def make_store(directory: Path) -> Path:
    """A store with QUEUED tasks in queue ``default``, checkpointed: no -wal beside it."""
    path = directory / "broker.db"
    produced = python(PRODUCE, f"taskq+sqlite://{path}")
    assert produced.returncode == 0, produced.stderr
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert db.execute("SELECT count(*) FROM messages WHERE queue = 'default'").fetchone()[0] == QUEUED
    return path


def truncate_to_zero(path: Path) -> None:
    os.truncate(path, 0)


def truncate_mid_page(path: Path) -> None:
    os.truncate(path, (path.stat().st_size // PAGE_SIZE // 2) * PAGE_SIZE + PAGE_SIZE // 3)


def overwrite_middle(path: Path) -> None:
    """A whole page in the middle (a B-tree page with 200 messages) becomes noise."""
    pages = path.stat().st_size // PAGE_SIZE
    noise = random.Random(12).randbytes(PAGE_SIZE)
    with open(path, "r+b") as file:
        file.seek((pages // 2) * PAGE_SIZE)
        file.write(noise)


def not_sqlite(path: Path) -> None:
    path.write_text("these are my notes, not a database\n" * 200)


def other_program(path: Path) -> None:
    path.unlink()
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO photos (name) VALUES ('cat.jpg')")


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def future_version(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA user_version = 99")


def wal_deleted(path: Path) -> None:
    """A process dies with its last commits still in the WAL, then the WAL is deleted."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:  # so the 200 tasks are in the main file, the new binding only in the WAL
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    code = (
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute(\"INSERT INTO bindings VALUES ('amq.direct', 'lost', 'default')\")\n"
        "os._exit(0)  # no close: no checkpoint, the WAL and its index stay\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    wal.unlink()


DAMAGES: dict[str, Callable[[Path], None]] = {
    "empty": truncate_to_zero,
    "truncated-mid-page": truncate_mid_page,
    "overwritten-middle": overwrite_middle,
    "not-sqlite": not_sqlite,
    "other-program": other_program,
    "directory": directory,
    "future-version": future_version,
    "wal-deleted": wal_deleted,
}


def snapshot(path: Path) -> object:
    if path.is_dir():
        return ("dir", sorted(os.listdir(path)))
    return ("file", hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store with 200 queued tasks, copied for each test (making it costs a subprocess)."""
    return make_store(tmp_path_factory.mktemp("pristine"))


@pytest.fixture(params=list(DAMAGES))
def damaged(request: pytest.FixtureRequest, pristine: Path, tmp_path: Path):
    """(path, what it looked like after the damage); checks it still looks so afterwards."""
    path = tmp_path / "broker.db"
    shutil.copy(pristine, path)
    DAMAGES[request.param](path)
    before = snapshot(path)
    yield path, request.param
    assert snapshot(path) == before, f"{request.param}: the damaged file was changed"
    assert not (tmp_path / "broker.db-wal").exists() or request.param != "wal-deleted", "a new WAL was started"


def one_line_naming(path: Path, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert str(path) in lines[0], lines[0]
    return lines[0]


def test_producer_gets_a_broker_error(damaged) -> None:
    path, _ = damaged
    result = python(DELAY_ONE, f"taskq+sqlite://{path}")
    assert result.returncode == 3 and result.stdout.startswith("BrokerError: "), (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    one_line_naming(path, result.stdout)


def test_status_says_one_line(damaged) -> None:
    path, _ = damaged
    result = taskq("status", "-A", "tests.support.apps:app", "--wait", "0.1", broker_url=f"taskq+sqlite://{path}")
    assert result.returncode != 0, result.stdout
    one_line_naming(path, result.stderr)


def test_worker_refuses_to_start(damaged) -> None:
    """Exits non-zero with one line, before it forks a single child (no crash loop)."""
    path, _ = damaged
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskq", "worker", "-A", "tests.support.apps:app", "-c", "2", "--log-format", "console"],
        cwd=ROOT, env={**os.environ, "TASKQ_BROKER_URL": f"taskq+sqlite://{path}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _, stderr = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=60)
        pytest.fail(f"the worker kept running on a damaged store:\n{stderr[-3000:]}")
    assert worker.returncode != 0
    assert "child" not in stderr, stderr
    one_line_naming(path, stderr)


def test_a_new_store_is_created_once_by_racing_processes(tmp_path: Path) -> None:
    """Eight processes opening a path that doesn't exist yet: one creates it, none sees a
    half-made file and calls it damaged, and every task each of them sent is there."""
    path = tmp_path / "new" / "broker.db"
    url = f"taskq+sqlite://{path}"
    code = "from tests.support.apps import add\nfor i in range(5):\n    add.delay(i, i)\nprint('sent')\n"
    env = {**os.environ, "TASKQ_BROKER_URL": url}
    starting = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    results = [process.communicate(timeout=120) for process in starting]
    for process, (stdout, stderr) in zip(starting, results):
        assert process.returncode == 0 and stdout.strip() == "sent", stderr
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        assert db.execute("SELECT count(*) FROM messages WHERE queue = 'default'").fetchone()[0] == 40
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith("broker.db")] == []


def test_a_store_deleted_while_in_use_stops_the_worker(tmp_path: Path) -> None:
    """Deleted under a running worker, which SQLite would not notice (it goes on with the
    unlinked file): the child says so, and the worker exits instead of starting another."""
    path = make_store(tmp_path)
    url = f"taskq+sqlite://{path}"
    stderr_path = tmp_path / "worker.err"
    with open(stderr_path, "w") as stderr_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskq", "worker", "-A", "tests.support.apps:app", "-c", "1", "--log-format", "console"],
            cwd=ROOT, env={**os.environ, "TASKQ_BROKER_URL": url}, stdout=subprocess.DEVNULL, stderr=stderr_file,
        )
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as db:
            wait_until(lambda: db.execute("SELECT count(*) FROM consumers WHERE queue = 'default'").fetchone()[0] > 0, timeout=60,
                       what="the worker's consumer")
        path.unlink()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker kept running on a deleted store:\n{stderr_path.read_text()[-3000:]}")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    stderr = stderr_path.read_text()
    assert worker.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert str(path) in stderr and "child died, starting another" not in stderr, stderr
    assert "deleted while in use" in stderr, stderr
    assert not path.exists(), "a new store was made in its place"


def test_a_row_damaged_inside_is_dead_lettered_and_the_rest_run(tmp_path: Path) -> None:
    """Bytes overwritten inside one stored message, which ``quick_check`` can't see (it checks
    the file's structure, not what a row says): that message goes to ``default.dead`` with a
    reason, the 199 others run, and no child dies on it."""
    path = make_store(tmp_path)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("UPDATE messages SET payload = '{\"body\": \"gq\x01\x02 noise' WHERE id = "
                   "(SELECT min(id) FROM messages WHERE queue = 'default')")
    stderr_path = tmp_path / "worker.err"
    with open(stderr_path, "w") as stderr_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskq", "worker", "-A", "tests.support.apps:app", "-c", "1", "--log-format", "console"],
            cwd=ROOT, env={**os.environ, "TASKQ_BROKER_URL": f"taskq+sqlite://{path}"},
            stdout=subprocess.DEVNULL, stderr=stderr_file,
        )
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as db:
            def queues() -> dict:
                return dict(db.execute("SELECT queue, count(*) FROM messages GROUP BY queue").fetchall())

            wait_until(lambda: queues().get("default", 0) == 0 and queues().get("default.dead") == 1, timeout=120,
                       what=f"the damaged message dead-lettered and the rest run: {queues()}")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    stderr = stderr_path.read_text()
    assert "child died" not in stderr and "Traceback" not in stderr, stderr
    assert "message dead-lettered" in stderr and "x-taskq-damaged" in stderr, stderr
    assert stderr.count("task succeeded") == QUEUED - 1


def test_a_store_from_before_the_stamp_is_used_and_stamped(tmp_path: Path) -> None:
    """A store made by an earlier taskq (no application_id in its header) is ours by its
    tables: it keeps working, tasks and all, and gets the stamp."""
    path = make_store(tmp_path)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA application_id = 0")
    result = python(DELAY_ONE, f"taskq+sqlite://{path}")
    assert result.stdout.strip() == "sent", result.stderr
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("SELECT count(*) FROM messages WHERE queue = 'default'").fetchone()[0] == QUEUED + 1
