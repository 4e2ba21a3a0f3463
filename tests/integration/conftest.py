"""Fixtures for tests that run real worker processes against the real broker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import redis
from kombu import Connection

from tests.support import ROOT
from tests.support.brokers import BROKER_NODE, BROKER_URL, RabbitNode, broker_reachable, queue_state
from tests.support.waiting import wait_until

IN_CI = os.environ.get("CI", "").lower() == "true"


BROKERS = ("rabbitmq", "embedded")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_brokers`` run once on RabbitMQ and once on the embedded broker."""
    if "broker_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_brokers"):
        metafunc.parametrize("broker_url", BROKERS, indirect=True, scope="session")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("rabbitmq_only")
    callspec = getattr(item, "callspec", None)
    if marker and callspec and callspec.params.get("broker_url") == "embedded":
        pytest.skip(f"RabbitMQ-only: {marker.kwargs.get('reason') or (marker.args[0] if marker.args else '')}")


@pytest.fixture(scope="session")
def broker_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The broker a test runs on: RabbitMQ unless parametrized (``both_brokers``) to the embedded one.

    RabbitMQ unreachable: a failure under CI=true, a skip elsewhere.
    """
    if getattr(request, "param", "rabbitmq") == "embedded":
        return f"taskq+sqlite://{tmp_path_factory.mktemp('embedded-broker') / 'broker.db'}"
    problem = broker_reachable(BROKER_URL)
    if problem:
        message = f"RabbitMQ at {BROKER_URL} is unreachable ({problem})"
        if IN_CI:
            pytest.fail(message + "; CI=true requires broker tests to run", pytrace=False)
        pytest.skip(message)
    return BROKER_URL


@pytest.fixture(scope="session")
def broker_node(broker_url: str) -> RabbitNode:
    """The RabbitMQ node under test, for ``rabbitmqctl``: never to be stopped (others may use it)."""
    return BROKER_NODE


@pytest.fixture(scope="session")
def private_nodes():
    """Starts RabbitMQ nodes of the suite's own on demand; every one is stopped at session end.

    Without ``rabbitmq-server`` the tests needing one skip, or fail under CI=true.
    """
    from tests.support.brokers import BrokerControlError, PrivateNodes

    base = Path(tempfile.mkdtemp(prefix="taskq-nodes-"))
    base.chmod(0o755)  # the nodes run as the rabbitmq user when we are root
    try:
        nodes = PrivateNodes(base)
    except BrokerControlError as exc:
        shutil.rmtree(base)
        if IN_CI:
            pytest.fail(f"{exc}; CI=true requires the destructive broker tests to run", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield nodes
    finally:
        nodes.stop_all()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def private_node(private_nodes):
    """One private RabbitMQ node, started the first time a test asks: the only kind a test may stop."""
    [node] = private_nodes.start(1)
    return node


@pytest.fixture(scope="session")
def rabbit_cluster(private_nodes):
    """Three private nodes joined into one cluster, started in parallel the first time a test asks."""
    return private_nodes.cluster(3)


@pytest.fixture
def amqp(broker_url: str):
    """A plain kombu connection for reading what the broker holds."""
    with Connection(broker_url) as connection:
        yield connection


@pytest.fixture
def queue_name(broker_url: str):
    """A fresh queue name for one test; the queue and its dead-letter queue are deleted after."""
    yield from _fresh_queue(broker_url)


@pytest.fixture
def other_queue_name(broker_url: str):
    """A second fresh queue name, for a test whose worker consumes two queues."""
    yield from _fresh_queue(broker_url)


def _fresh_queue(broker_url: str):
    name = f"test.{uuid.uuid4().hex[:12]}"
    yield name
    with Connection(broker_url) as connection:
        channel = connection.channel()
        for queue in (name, name + ".dead"):
            try:
                channel.queue_delete(queue)
            except Exception:
                channel = connection.channel()


@pytest.fixture
def app(broker_url: str):
    """The test app, pointed at the test broker."""
    from tests.support.apps import app as test_app

    test_app.use_broker(broker_url)
    yield test_app
    test_app.close()


class WorkerProcess:
    """A ``taskq worker`` subprocess (supervisor plus children) started by a test."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        # Freeze the supervisor first: otherwise it sees a child die and forks a replacement
        # between our listing its children and killing it, and that child lives on, orphaned.
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGSTOP)
        for pid in self.child_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def start_worker(broker_url: str, tmp_path: Path):
    """Start a worker on given queues and wait until the broker sees all its consumers."""
    started: list[WorkerProcess] = []

    def start(queues: list[str], concurrency: int = 1, app: str = "tests.support.apps:app", extra_env: dict | None = None, extra_args: tuple = ()) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        command = [
            sys.executable, "-m", "taskq", "worker", "-A", app, "-Q", ",".join(queues),
            "-c", str(concurrency), "--broker", broker_url, "--log-format", "json", "--loglevel", "info",
            *extra_args,
        ]
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, log_path)
        started.append(worker)
        with Connection(broker_url) as connection:
            wait_until(
                lambda: process.poll() is not None
                or all(_consumers(connection, q) >= concurrency for q in queues),
                what=f"{concurrency} consumers on {queues}",
            )
        assert process.poll() is None, f"worker exited early:\n{worker.log()}"
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


def _consumers(connection: Connection, queue: str) -> int:
    try:
        return queue_state(connection, queue)[1]
    except Exception:
        return 0


#: The machine's Redis, for the state-store tests; each test keeps to a key prefix of its own.
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["sqlite", "redis"])
def results_url(request, tmp_path):
    """A store of this test's own: a fresh SQLite file, or a key prefix no other test uses."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'results.db'}"
        return
    if not redis_reachable():
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is unreachable; CI=true requires these tests to run", pytrace=False)
        pytest.skip(f"Redis at {REDIS_URL} is unreachable")
    prefix = f"taskq-test:{uuid.uuid4().hex[:12]}:"
    yield f"{REDIS_URL}?prefix={prefix}"
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
