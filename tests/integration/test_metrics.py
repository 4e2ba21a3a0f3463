"""``taskq worker --metrics-port``: a real worker of two children on RabbitMQ, scraped over HTTP;
and the command's mistakes (no prometheus_client, a port taken or out of range), without a broker."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskq import TaskError
from tests.support.cli_helpers import taskq
from tests.support import ROOT
from tests.support.waiting import wait_until

broker_test = pytest.mark.broker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``/metrics``, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(port: int, done, what: str) -> dict:
    """Scrape until ``done(samples)``: a count may lag the reply its caller got, never by much."""
    def samples_if_done() -> dict | None:
        samples = scrape(port)
        return samples if done(samples) else None

    return wait_until(samples_if_done, what=what)


@pytest.fixture
def metrics_app(broker_url: str):
    from tests.support.apps_metrics import app

    app.use_broker(broker_url)
    yield app
    app.close()


@pytest.fixture
def metrics_worker(metrics_app, queue_name, start_worker, tmp_path):
    """``taskq worker -c 2 --metrics-port PORT``, with its temporary files under tmp_path/tmp."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    worker = start_worker([queue_name], concurrency=2, app="tests.support.apps_metrics:app",
                          extra_env={"TMPDIR": str(temp)}, extra_args=("--metrics-port", str(port)))
    worker.port, worker.temp = port, temp
    return worker


def multiprocess_directory(worker) -> Path:
    """The directory the banner names, which must be the one under our TMPDIR."""
    shown = Path(re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)\)", worker.log())[1])
    assert list(worker.temp.iterdir()) == [shown]
    return shown


@broker_test
def test_counts_of_both_children_add_up_at_one_endpoint(metrics_worker, queue_name):
    from tests.support.apps_metrics import fails, pid, retried

    worker = metrics_worker
    assert f"metrics:     http://{socket.gethostname()}:{worker.port}/metrics" in worker.log()
    directory = multiprocess_directory(worker)
    results = [pid.apply_async(queue=queue_name) for _ in range(30)]
    pids = [result.get(timeout=30) for result in results]
    assert len(set(pids)) == 2, "one child ran every task: the sum would not prove both are counted"
    for result in [fails.apply_async(queue=queue_name) for _ in range(3)] + [
            retried.apply_async(queue=queue_name) for _ in range(2)]:
        with pytest.raises(TaskError):
            result.get(timeout=30)

    def q(task: str) -> dict[str, str]:
        return {"task": task, "queue": queue_name}

    # A caller hears of a dead letter before the dead letter is counted: wait for the counts.
    samples = scrape_until(worker.port, lambda s: (
        sample(s, "taskq_tasks_dead_lettered_total", reason="retries-exhausted", **q("metrics.retried")) == 2
        and sample(s, "taskq_tasks_dead_lettered_total", reason="failed", **q("metrics.fails")) == 3
    ), what="the five dead letters counted")
    assert sample(samples, "taskq_tasks_received_total", **q("metrics.pid")) == 30
    assert sample(samples, "taskq_tasks_succeeded_total", **q("metrics.pid")) == 30
    assert sample(samples, "taskq_task_run_seconds_count", **q("metrics.pid")) == 30
    assert sample(samples, "taskq_tasks_failed_total", **q("metrics.pid")) == 0
    assert sample(samples, "taskq_tasks_received_total", **q("metrics.fails")) == 3
    assert sample(samples, "taskq_tasks_failed_total", **q("metrics.fails")) == 3
    assert sample(samples, "taskq_tasks_retried_total", **q("metrics.fails")) == 0
    assert sample(samples, "taskq_tasks_received_total", **q("metrics.retried")) == 6  # 2 messages, 3 attempts each
    assert sample(samples, "taskq_tasks_failed_total", **q("metrics.retried")) == 6
    assert sample(samples, "taskq_tasks_retried_total", **q("metrics.retried")) == 4
    assert sample(samples, "taskq_task_run_seconds_count", **q("metrics.retried")) == 6
    assert sum(value for (name, _), value in samples.items() if name == "taskq_tasks_in_flight") == 0
    # Each child wrote its own files: the numbers above are two processes' added up.
    assert {f"counter_{child}.db" for child in set(pids)} <= {path.name for path in directory.iterdir()}

    assert worker.stop() == 0
    assert not directory.exists() and list(worker.temp.iterdir()) == []


@broker_test
def test_in_flight_adds_up_the_live_children_and_forgets_a_killed_one(metrics_worker, queue_name, tmp_path):
    from tests.support.apps_metrics import holds

    worker = metrics_worker
    log, release = tmp_path / "runs", tmp_path / "release"

    def in_flight() -> float:
        return sample(scrape(worker.port), "taskq_tasks_in_flight", task="metrics.holds", queue=queue_name)

    def starts() -> list[list[str]]:
        return [line.split() for line in log.read_text().splitlines()] if log.exists() else []

    first = holds.apply_async((str(log), "first", str(release)), queue=queue_name)
    second = holds.apply_async((str(log), "second", str(release)), queue=queue_name)
    wait_until(lambda: len(starts()) == 2, what="both tasks running, one in each child")
    assert in_flight() == 2

    victim = int(next(row[2] for row in starts() if row[1] == "first"))
    os.kill(victim, signal.SIGKILL)
    # The broker gives the message to the replacement child, where it returns at once.
    assert first.get(timeout=30) not in (victim, None)
    # Without mark_process_dead the killed child's 1 would be counted for ever.
    wait_until(lambda: in_flight() == 1, what="the killed child's run no longer in flight")

    release.touch()
    second.get(timeout=30)
    wait_until(lambda: in_flight() == 0, what="nothing in flight")
    assert worker.stop() == 0


def listening_socket_inode(port: int) -> str:
    """The inode of the IPv4 socket listening on ``port``, from the kernel's table (Linux)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:  # 0A: LISTEN
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def socket_inodes(pid: int) -> set[str]:
    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    return {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}


@broker_test
def test_only_the_supervisor_holds_the_metrics_port(metrics_worker):
    # The children are forked after the server started: each closes its copy of the socket,
    # or one outliving the supervisor would keep the port, answering nothing.
    worker = metrics_worker
    inode = listening_socket_inode(worker.port)
    assert inode in socket_inodes(worker.pid)
    children = worker.child_pids()
    assert len(children) == 2
    assert [child for child in children if inode in socket_inodes(child)] == []


# -- mistakes on the command line, no broker needed ---------------------------------------------


ABSENT_PROMETHEUS = """
import sys

class Absent:
    \"\"\"prometheus_client as if not installed: the import fails the way a missing package's does.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "prometheus_client":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
from taskq.cli import main
sys.argv = ["taskq", *sys.argv[1:]]
main()
"""


def run_python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_metrics_port_without_prometheus_client_is_a_usage_error_naming_the_extra(tmp_path):
    ran = run_python(ABSENT_PROMETHEUS, "worker", "-A", "tests.support.apps_metrics:app", "--metrics-port", str(free_port()),
                     env={"TMPDIR": str(tmp_path)})
    assert ran.returncode == 2, ran.stderr
    assert "pip install 'taskq-rabbitmq[metrics]'" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert list(tmp_path.iterdir()) == []  # the directory made for the children is gone


def test_the_blocker_itself_hides_prometheus_client():
    # The test above would pass for the wrong reason if the blocker did nothing.
    ran = run_python(ABSENT_PROMETHEUS.replace("from taskq.cli import main", "import prometheus_client"))
    assert ran.returncode == 1 and "No module named 'prometheus_client'" in ran.stderr


def test_a_worker_without_metrics_never_imports_prometheus_client():
    ran = run_python("import sys, taskq.cli, taskq.worker, taskq.middleware; "
                     "sys.exit('prometheus_client' in sys.modules)")
    assert ran.returncode == 0, ran.stderr


def test_metrics_port_taken_is_one_line_not_a_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run([sys.executable, "-m", "taskq", "worker", "-A", "tests.support.apps_metrics:app",
                              "--metrics-port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "TMPDIR": str(tmp_path)})
    assert ran.returncode == 2, ran.stderr
    assert f"--metrics-port: cannot listen on 0.0.0.0:{port}: Address already in use" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["0", "65536"])
def test_metrics_port_out_of_range_is_refused(port):
    ran = taskq("worker", "-A", "tests.support.apps_metrics:app", "--metrics-port", port, broker_url="memory://")
    assert ran.returncode == 2
    assert "--metrics-port" in ran.stderr and "1<=x<=65535" in ran.stderr
