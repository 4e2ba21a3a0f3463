"""The RabbitMQ nodes a test run talks to: the broker under test, and private nodes it starts itself.

Every ``rabbitmqctl`` a test runs goes through a :class:`RabbitNode`, so it names the node
(``-n``) that serves the URL under test; a plain ``rabbitmqctl`` would describe the machine's
default node whatever URL the suite was pointed at. Only a node the suite started
(``private``) may be stopped or killed: the default node may be serving other people.

A private node has its own node name, AMQP and distribution ports, config, data and log
directories under one base directory. Run as root, the server's scripts switch to the
``rabbitmq`` user, so the directories are handed to that user; every node and every
``rabbitmqctl`` then shares that user's Erlang cookie, which is what lets them cluster.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from kombu import Connection

from taskq.local_node import node_listens_on

DEFAULT_NODE = "rabbit@localhost"
FIRST_PRIVATE_PORT = 5700  # AMQP; the distribution port is 20000 above (RabbitMQ's own rule)
NODE_START_TIMEOUT = 120  # seconds: a loaded 2-core machine starts a node in 5-30 s


class BrokerControlError(AssertionError):
    """A ``rabbitmqctl`` call, or a node start or stop, failed: the test can't trust the broker."""


@dataclass
class RabbitNode:
    """One RabbitMQ node: its Erlang name, the AMQP URL it serves, and (if ours) where it lives."""

    name: str
    url: str
    base: Path | None = None  #: the private node's directory; None for a node the suite did not start
    process: subprocess.Popen | None = field(default=None, repr=False)
    proven: bool = field(default=False, repr=False)  #: checked to serve the URL's port

    @property
    def port(self) -> int:
        return urlparse(self.url).port or 5672

    @property
    def vhost(self) -> str:
        path = urlparse(self.url).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def private(self) -> bool:
        return self.base is not None

    def ctl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """``rabbitmqctl -n NODE ARGS``; its stdout."""
        if not self.private and not self.proven:
            self.check_serves_url()
        done = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.name, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise BrokerControlError(f"rabbitmqctl -n {self.name} {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def ctl_json(self, *args: str) -> list[dict]:
        return json.loads(self.ctl(*args, "--formatter", "json") or "[]")

    def list_queues(self, *columns: str) -> dict[str, dict]:
        """{queue: {column: value}} of this node's vhost, straight from the broker."""
        rows = self.ctl_json("list_queues", "-p", self.vhost, "name", *columns)
        return {row["name"]: row for row in rows}

    def check_serves_url(self) -> None:
        """Fail unless this node's AMQP listener is the URL's port: else every number read is another broker's.

        The quick proof reads /proc; when another user's process can't be read there, the
        node itself lists its listeners (one more Erlang start-up, once a session).
        """
        self.proven = node_listens_on(self.name, self.port) or self.port in self.amqp_ports()
        if not self.proven:
            raise BrokerControlError(
                f"node {self.name} does not listen on port {self.port} of {self.url}; "
                "set TASKQ_TEST_BROKER_NODE to the node serving TASKQ_TEST_BROKER_URL"
            )

    def amqp_ports(self) -> set[int]:
        done = subprocess.run(
            ["rabbitmq-diagnostics", "-q", "-n", self.name, "listeners", "--formatter", "json"],
            capture_output=True, text=True, timeout=120,
        )
        try:
            listeners = json.loads(done.stdout)["listeners"]
        except (ValueError, KeyError, TypeError):
            return set()
        return {listener["port"] for listener in listeners if listener.get("protocol") == "amqp"}

    # -- a private node's life -------------------------------------------------------------

    def _require_private(self, action: str) -> Path:
        if self.base is None:
            raise BrokerControlError(f"refusing to {action} {self.name}: the test suite did not start it")
        return self.base

    def environment(self) -> dict[str, str]:
        """What ``rabbitmq-server`` and ``rabbitmqctl`` need to find this node and nothing of the default one."""
        base = self._require_private("configure")
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
        }

    def prepare(self) -> None:
        base = self._require_private("prepare")
        for directory in (base, base / "mnesia", base / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's, which names the default node
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (base / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:  # the server's scripts run it as the rabbitmq user
            owner = pwd.getpwnam("rabbitmq")
            for path in [base, *base.rglob("*")]:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        """Start the node and return once it accepts AMQP clients."""
        base = self._require_private("start")
        with open(base / "server.out", "ab") as out:
            self.process = subprocess.Popen(
                ["rabbitmq-server"], env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.await_startup()

    def await_startup(self) -> None:
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerControlError(f"{self.name} exited while starting:\n{self.server_output()}")
            if self.ctl("await_startup", "--timeout", "10", check=False, timeout=30) == "" and self.accepts_amqp():
                return
            time.sleep(0.5)
        raise BrokerControlError(f"{self.name} not up after {NODE_START_TIMEOUT} s:\n{self.server_output()}")

    def accepts_amqp(self) -> bool:
        return broker_reachable(self.url) is None

    def server_output(self) -> str:
        base = self._require_private("read the output of")
        return (base / "server.out").read_text(errors="replace")[-3000:]

    def beam_pid(self) -> int | None:
        """The Erlang VM's pid, from the pid file the server writes: what ``kill -9`` must hit."""
        pid_file = self._require_private("find the VM of") / "pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        """A clean stop (the broker syncs and says goodbye to its clients)."""
        self._require_private("stop")
        self.ctl("stop", check=False, timeout=120)
        self._reap()

    def kill9(self) -> None:
        """The VM dies at once: nothing flushed, no goodbye to clients, as in a power cut."""
        self._require_private("kill")
        pid = self.beam_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        pid = self.beam_pid()
        if pid is not None:  # `stop` gave up, or never got through: the VM must not outlive us
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self.process = None
        (self._require_private("clean up") / "pid").unlink(missing_ok=True)

    def join(self, leader: RabbitNode) -> None:
        """Make this (fresh) node a member of ``leader``'s cluster."""
        self.ctl("stop_app")
        self.ctl("reset")
        self.ctl("join_cluster", leader.name)
        self.ctl("start_app")


def broker_reachable(url: str) -> str | None:
    """None if the broker answers, else why not."""
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
        return None
    except Exception as exc:  # any failure means: not reachable
        return f"{type(exc).__name__}: {exc}"


def queue_state(connection: Connection, name: str) -> tuple[int, int]:
    """(messages ready, consumers) as the broker reports them."""
    channel = connection.channel()
    try:
        _, ready, consumers = channel.queue_declare(queue=name, passive=True)
        return ready, consumers
    finally:
        channel.close()


def node_for_url(url: str) -> RabbitNode:
    """The node serving the URL under test: TASKQ_TEST_BROKER_NODE, else the machine's default node."""
    return RabbitNode(os.environ.get("TASKQ_TEST_BROKER_NODE", DEFAULT_NODE), url)


#: The node under test; ``RabbitNode.ctl`` proves it serves the URL before its first command.
BROKER_URL = os.environ.get("TASKQ_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BROKER_NODE = node_for_url(BROKER_URL)


def free_port_pair(start: int) -> int:
    """The first AMQP port from ``start`` on that is free, with its distribution port free too."""
    for port in range(start, start + 200):
        if all(_port_free(p) for p in (port, port + 20000)):
            return port
    raise BrokerControlError(f"no free port pair in {start}-{start + 200}")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PrivateNodes:
    """Starts private nodes on demand, each with fresh name, ports and directory, and ends them all."""

    def __init__(self, base: Path) -> None:
        if shutil.which("rabbitmq-server") is None:
            raise BrokerControlError("rabbitmq-server is not installed: private nodes need it")
        self.base = base
        self.nodes: list[RabbitNode] = []
        self.next_port = FIRST_PRIVATE_PORT
        self.session = f"{os.getpid()}"

    def new(self) -> RabbitNode:
        port = free_port_pair(self.next_port)
        self.next_port = port + 1
        index = len(self.nodes)
        directory = self.base / f"node-{index}"
        node = RabbitNode(f"taskq-test-{self.session}-{index}@localhost", f"amqp://guest:guest@127.0.0.1:{port}//", directory)
        node.prepare()
        self.nodes.append(node)
        return node

    def start(self, count: int) -> list[RabbitNode]:
        """``count`` new nodes, started in parallel (each takes seconds to boot)."""
        nodes = [self.new() for _ in range(count)]
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(RabbitNode.start, nodes))
        return nodes

    def cluster(self, count: int = 3) -> list[RabbitNode]:
        nodes = self.start(count)
        for node in nodes[1:]:
            node.join(nodes[0])
        return nodes

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop()
