"""What every system's runner shares: broker settings, timing marks, queue admin, worker processes.

The harness measures each system from the outside in the same way, so the pieces that do the
measuring live here rather than in the per-system modules: a system module only knows how to
publish, how to start its workers and how to do one round trip.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from kombu import Connection

#: The broker every system talks to. The smoke test's variable is honoured so CI can point both
#: at the same RabbitMQ.
BROKER_URL: str = os.environ.get(
    "TASKQ_BENCH_BROKER_URL",
    os.environ.get("TASKQ_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
)
#: Dramatiq has no RPC result backend, so its round trips go through Redis (see README).
REDIS_URL: str = os.environ.get("TASKQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

REPO_ROOT: Path = Path(__file__).resolve().parent.parent

#: Suffix of every queue name in one harness run. Set once in the harness process and inherited by
#: the workers it spawns (they import the same system modules), so two runs at once on a shared
#: broker, e.g. the smoke test inside two test-suite runs, never consume each other's messages.
RUN_ID: str = os.environ.setdefault("TASKQ_BENCH_RUN_ID", uuid.uuid4().hex[:6])


def queue_name(system: str) -> str:
    """``bench.<system>.<run id>``: the work queue of one system in this run."""
    return f"bench.{system}.{RUN_ID}"

#: Environment variable carrying the mark directory to the worker processes (informational only:
#: the mark path travels inside the message, so workers need no configuration to write it).
MARK_ENV = "TASKQ_BENCH_MARK_DIR"


class Unavailable(Exception):
    """A system cannot be benchmarked here (not installed, API missing); the reason is shown."""


# --------------------------------------------------------------------------- timing marks
#
# Drain and cold start are timed by the workers themselves: the first and the last pre-loaded
# message carry a file path, and the no-op task writes ``time.monotonic()`` there. CLOCK_MONOTONIC
# is system-wide on Linux, so the harness can subtract it from its own monotonic readings; it is
# immune to wall-clock steps, unlike time.time().


def record_mark(path: str | None) -> None:
    """Called by every system's no-op task: write the current monotonic time to *path*, if any.

    Written to a temporary name and renamed so the harness never reads a half-written file.
    """
    if not path:
        return
    now = time.monotonic()
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(repr(now))
    os.replace(tmp, path)


def wait_for_mark(path: Path, timeout: float, workers: WorkerProcesses | None = None) -> float:
    """Block until a worker has written *path*; return the monotonic time it recorded.

    Polls every 2 ms (the marks are read once per phase, so polling costs nothing measured).
    Fails early if the worker processes died, so a broken system doesn't cost the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return float(path.read_text())
        except (FileNotFoundError, ValueError):
            pass
        if workers is not None and not workers.alive():
            raise RuntimeError(f"worker exited before writing {path.name}; {workers.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} mark after {timeout:.0f}s; {workers.log_tail() if workers else ''}")
        time.sleep(0.002)


# --------------------------------------------------------------------------- queue admin
#
# The harness inspects and cleans queues on its own connection, with a fresh channel for each
# operation: a passive declare of a missing queue closes the channel (404), and that must not
# take anything else down with it.


def _on_fresh_channel(op):
    with Connection(BROKER_URL) as conn:
        channel = conn.channel()
        try:
            return op(channel)
        finally:
            try:
                channel.close()
            except Exception:  # noqa: BLE001 - the channel may already be closed by a 404
                pass


def queue_depth(name: str) -> int:
    """Messages ready in *name*, from a passive ``queue_declare`` (unacked ones are not counted)."""
    return _on_fresh_channel(lambda ch: ch.queue_declare(queue=name, passive=True).message_count)


def wait_queue_empty(name: str, timeout: float = 30.0) -> None:
    """Wait until *name* has no ready messages (a sanity check after a drain)."""
    deadline = time.monotonic() + timeout
    while queue_depth(name) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {name} still has messages after {timeout:.0f}s")
        time.sleep(0.05)


def purge_queue(name: str) -> None:
    """Drop every ready message in *name* (ignored if the queue doesn't exist)."""
    try:
        _on_fresh_channel(lambda ch: ch.queue_purge(queue=name))
    except Exception:  # noqa: BLE001 - a missing queue has nothing to purge
        pass


def delete_queues(names: Iterable[str]) -> None:
    """Delete queues; deleting a missing queue is not an error in RabbitMQ."""
    for name in names:
        _on_fresh_channel(lambda ch, n=name: ch.queue_delete(queue=n))


def delete_exchanges(names: Iterable[str]) -> None:
    """Delete exchanges a system declared for itself (Celery declares one per queue)."""
    for name in names:
        _on_fresh_channel(lambda ch, n=name: ch.exchange_delete(exchange=n))


# --------------------------------------------------------------------------- worker processes


def worker_env() -> dict[str, str]:
    """The environment for worker commands: the repo on sys.path so ``bench.*`` imports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["TASKQ_BENCH_BROKER_URL"] = BROKER_URL
    env["TASKQ_BENCH_REDIS_URL"] = REDIS_URL
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


#: Helper processes some frameworks start that are not workers; excluded from RSS per child.
_NOT_WORKERS = ("resource_tracker", "semaphore_tracker", "forkserver")


def _ppid_map() -> dict[int, int]:
    """pid -> parent pid for every process we can see."""
    result: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        result[int(entry)] = int(fields[1])
    return result


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_mib(pid: int) -> float:
    """VmRSS of *pid* in MiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time *pid* has used so far, from /proc/<pid>/stat (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def broker_pid() -> int | None:
    """The local RabbitMQ's Erlang VM (read-only: its CPU time shows where a drain's time goes)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "beam.smp":
                        return int(entry)
            except OSError:
                continue
    return None


class WorkerProcesses:
    """The worker command(s) one system runs, started in their own session so they can be stopped
    as a group, with output going to a log file the harness can quote when something fails.

    Either one supervisor command that forks its own children (taskq, Celery, Dramatiq) or several
    standalone worker processes (the raw kombu worker, which has no supervisor).
    """

    def __init__(self, commands: Sequence[Sequence[str]], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.procs: list[subprocess.Popen[bytes]] = []
        for cmd in commands:
            self.procs.append(
                subprocess.Popen(
                    list(cmd),
                    cwd=REPO_ROOT,
                    env=env if env is not None else worker_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def alive(self) -> bool:
        """True while every started command is still running."""
        return all(p.poll() is None for p in self.procs)

    def log_tail(self, lines: int = 8) -> str:
        """The last lines the workers printed, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f"worker log {self.log_path}: " + " | ".join(text[-lines:])

    def child_pids(self) -> list[int]:
        """The processes that run tasks.

        For a supervisor: its descendants, minus multiprocessing helpers. For standalone workers
        (more than one command): the commands themselves.
        """
        if len(self.procs) > 1:
            return [p.pid for p in self.procs if p.poll() is None]
        parents = _ppid_map()
        found: list[int] = []
        frontier = [self.procs[0].pid]
        while frontier:
            pid = frontier.pop()
            kids = [c for c, pp in parents.items() if pp == pid]
            for kid in kids:
                if not any(word in _cmdline(kid) for word in _NOT_WORKERS):
                    found.append(kid)
                frontier.append(kid)
        return sorted(found)

    def supervisor_pids(self) -> list[int]:
        """The supervisor process, when there is one."""
        return [self.procs[0].pid] if len(self.procs) == 1 else []

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a graceful stop for every system here), then SIGKILL the group if it lingers."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            # The session we created has the leader's pid as its group id; anything still in it
            # (a hung leader, or children orphaned by it) is ours to kill.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()


def python_command(*args: str) -> list[str]:
    """A command running this interpreter (the venv's), so workers see the same packages."""
    return [sys.executable, *args]


# --------------------------------------------------------------------------- statistics


def time_calls(call: Callable[[], object], n: int) -> list[float]:
    """Seconds each of ``n`` sequential ``call()`` took: the RPC phase of every client-library system."""
    timings = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed, no interpolation."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- broker's view


def _rabbitmqctl(*args: str) -> list[dict[str, object]]:
    """A ``rabbitmqctl list_*`` command's rows as dicts (JSON output: column order is the tool's)."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "--formatter", "json", *args],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return json.loads(out)


def broker_prefetch_view(queue: str) -> str:
    """What RabbitMQ says about the consumers on *queue*: per-consumer prefetch and the
    channel-global prefetch of their channels (Celery uses the latter). Needs a local
    ``rabbitmqctl``; used by ``--show-prefetch`` to check the "prefetch 1" claim per system.
    """
    consumers = [c for c in _rabbitmqctl("list_consumers", "channel_pid", "queue_name", "prefetch_count")
                 if c["queue_name"] == queue]
    global_by_channel = {c["pid"]: c["global_prefetch_count"]
                         for c in _rabbitmqctl("list_channels", "pid", "global_prefetch_count")}
    per_consumer = sorted(str(c["prefetch_count"]) for c in consumers)
    per_channel = sorted(str(global_by_channel.get(c["channel_pid"], "?")) for c in consumers)
    return (f"broker view: {len(consumers)} consumers on {queue}, consumer prefetch "
            f"{'/'.join(per_consumer) or '-'}, channel-global prefetch {'/'.join(per_channel) or '-'}")
