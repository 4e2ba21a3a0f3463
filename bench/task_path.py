"""Which taskq source files one task passes through, from ``.delay()`` to ``.get()``.

    python bench/task_path.py [--broker URL] [--json]

It runs a real ``taskq worker -c 1`` and a producer process that calls ``add.delay(2, 3).get()``,
both with a profiler that notes every taskq function the first time it runs, in every process
and thread (the supervisor, its forked child, the child's watchdog and task threads, the
producer's reply reader). Then it prints, per taskq file that had a function run: the file's
lines and the lines of the functions that ran, with the totals twice: "all", and "excluding
CLI start-up" (``taskq/cli/``, ``taskq/cli*.py``, ``taskq/loader.py``, ``taskq/__main__.py``:
parsing the command line and importing the app, which a newcomer following a task skips).

What counts as "ran": a function, method, lambda or generator whose code started at least
once (``sys.setprofile``/``threading.setprofile``, installed by a ``sitecustomize`` module
this script writes and puts on the processes' ``PYTHONPATH``). Module and class bodies
(imports) don't count; a function called while importing does. Start-up counts too (a worker
connecting is on every task's path); the embedded broker's files count only with an
embedded ``--broker``.

It uses nothing but taskq's public API (``App``, ``@app.task``, ``.delay``, ``.get``) and the
``taskq worker`` command, so it measures an old checkout as well as this one: run it with that
checkout's interpreter, e.g. ``/tmp/old/.venv/bin/python bench/task_path.py``. The taskq
measured is the one that interpreter imports. It declares one queue ``bench.task_path.<id>``
(and the ``.dead`` queue beside it) and deletes both afterwards.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BROKER_URL = os.environ.get(
    "TASKQ_BENCH_BROKER_URL", os.environ.get("TASKQ_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
)
TIMEOUT = 120.0  # seconds for the round trip and for each process to end

#: Loaded first by every Python process started with the scratch directory on PYTHONPATH (and
#: inherited by a forked child): notes each function of a file under $TASK_PATH_ROOT the first
#: time it starts, one line per function in $TASK_PATH_OUT/<pid>.tsv, written at once, because a
#: worker child ends with os._exit and would never flush a buffer.
SITECUSTOMIZE = '''
import os, sys, threading

_root = os.environ.get("TASK_PATH_ROOT")
_out = os.environ.get("TASK_PATH_OUT")
if _root and _out:
    _seen = set()
    _files = {}  # pid -> fd: a forked child writes its own file, not the parent's
    _FUNCTION = 0x2  # CO_NEWLOCALS: functions, not module or class bodies

    def _note(code):
        pid = os.getpid()
        fd = _files.get(pid)
        if fd is None:
            fd = _files[pid] = os.open(os.path.join(_out, f"{pid}.tsv"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        lines = [line for _, _, line in code.co_lines() if line is not None]
        last = max(lines, default=code.co_firstlineno)
        os.write(fd, f"{code.co_filename}\\t{code.co_qualname}\\t{code.co_firstlineno}\\t{last}\\n".encode())

    def _profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code not in _seen:
                _seen.add(code)
                if code.co_flags & _FUNCTION and os.path.realpath(code.co_filename).startswith(_root):
                    _note(code)

    sys.setprofile(_profile)
    threading.setprofile(_profile)
'''

APP_MODULE = '''
import os
from taskq import App

app = App("task_path", broker=os.environ["TASK_PATH_BROKER"])


@app.task(queue=os.environ["TASK_PATH_QUEUE"])
def add(x, y):
    return x + y
'''

PRODUCER = '''
import json, os, sys
from task_path_app import add, app

value = add.delay(2, 3).get(timeout=float(sys.argv[1]))
app.close()
print(json.dumps({"pid": os.getpid(), "value": value}))
'''


def is_cli_start_up(relative: str) -> bool:
    """Parsing the command line and importing the app module: ``taskq/cli/``, the old
    ``taskq/cli*.py``, ``taskq/loader.py`` and ``taskq/__main__.py``."""
    name = relative.rsplit("/", 1)[-1]
    return relative.startswith("cli/") or (name.startswith("cli") and "/" not in relative) or name in (
        "loader.py", "__main__.py")


@dataclass
class FileOnPath:
    """One taskq file that had a function run, and by whom."""

    path: str  #: relative to the taskq package, e.g. ``worker/child.py``
    lines: int  #: the file's lines
    function_lines: set[int] = field(default_factory=set)  #: lines inside functions that ran
    functions: set[str] = field(default_factory=set)
    processes: set[str] = field(default_factory=set)  #: "producer", "worker"

    def as_dict(self) -> dict[str, object]:
        return {"path": f"taskq/{self.path}", "lines": self.lines, "function_lines": len(self.function_lines),
                "functions": sorted(self.functions), "processes": sorted(self.processes),
                "cli_start_up": is_cli_start_up(self.path)}


def taskq_root() -> Path:
    """The taskq package this interpreter would import, found without importing it."""
    spec = importlib.util.find_spec("taskq")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("task_path: this interpreter has no taskq to measure")
    return Path(os.path.realpath(next(iter(spec.submodule_search_locations))))


def taskq_command() -> list[str]:
    """``taskq`` beside this interpreter (its console script), else ``python -m taskq``."""
    script = Path(sys.executable).with_name("taskq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "taskq"]


def measure(broker: str, scratch: Path) -> tuple[Path, dict[int, str]]:
    """Run the worker and the producer under the profiler: the profile files' directory, and
    which pid was the producer (the others are the worker's)."""
    root = taskq_root()
    out = scratch / "profile"
    out.mkdir()
    (scratch / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (scratch / "task_path_app.py").write_text(APP_MODULE)
    (scratch / "producer.py").write_text(PRODUCER)
    queue = f"bench.task_path.{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(scratch), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TASK_PATH_ROOT": str(root) + os.sep, "TASK_PATH_OUT": str(out), "TASK_PATH_BROKER": broker,
           "TASK_PATH_QUEUE": queue}
    worker_log = (scratch / "worker.log").open("w")
    worker = subprocess.Popen([*taskq_command(), "worker", "-A", "task_path_app:app", "-Q", queue, "-c", "1",
                               "--loglevel", "warning"], cwd=scratch, env=env, stdout=worker_log,
                              stderr=subprocess.STDOUT)
    try:
        producer = subprocess.run([sys.executable, str(scratch / "producer.py"), str(TIMEOUT)], cwd=scratch, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT + 30)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        worker_log.close()
        delete_queues(broker, [queue, f"{queue}.dead"])
    answer = producer.stdout.strip().splitlines()[-1:] if producer.returncode == 0 else []
    said = json.loads(answer[0]) if answer else {}
    if said.get("value") != 5:
        raise SystemExit(f"task_path: the round trip failed (exit {producer.returncode}):\n{producer.stdout}"
                         f"{producer.stderr}\nworker:\n{(scratch / 'worker.log').read_text()}")
    return out, {int(said["pid"]): "producer"}


def delete_queues(broker: str, names: list[str]) -> None:
    """Delete the queues this run created (and only those), whatever the worker left in them."""
    if not broker.startswith(("amqp://", "pyamqp://")):
        return
    import kombu  # taskq's own dependency, untyped: not taskq code, so never on the path

    with kombu.Connection(broker) as connection:  # type: ignore[attr-defined, no-untyped-call]
        for name in names:
            channel = connection.channel()
            try:
                channel.queue_delete(name)
            except Exception:  # noqa: BLE001 - not declared in this version: nothing to delete
                pass
            finally:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001 - a channel closed by the broker's 404
                    pass


def collect(out: Path, roles: dict[int, str]) -> list[FileOnPath]:
    root = taskq_root()
    files: dict[str, FileOnPath] = {}
    for path in sorted(out.glob("*.tsv")):
        role = roles.get(int(path.stem), "worker")
        for line in path.read_text().splitlines():
            filename, qualname, first, last = line.split("\t")
            relative = Path(os.path.realpath(filename)).relative_to(root).as_posix()
            entry = files.get(relative)
            if entry is None:
                with open(root / relative, encoding="utf-8") as source:
                    entry = files[relative] = FileOnPath(relative, sum(1 for _ in source))
            entry.function_lines.update(range(int(first), int(last) + 1))
            entry.functions.add(qualname)
            entry.processes.add(role)
    return sorted(files.values(), key=lambda f: f.path)


def totals(files: list[FileOnPath]) -> tuple[int, int, int]:
    return len(files), sum(f.lines for f in files), sum(len(f.function_lines) for f in files)


def report(files: list[FileOnPath], root: Path) -> str:
    rows = [f"taskq measured: {root}", "",
            f"{'file':<40} {'lines':>6} {'ran':>6}  processes"]
    for entry in files:
        mark = "  (CLI start-up)" if is_cli_start_up(entry.path) else ""
        rows.append(f"taskq/{entry.path:<34} {entry.lines:>6} {len(entry.function_lines):>6}  "
                    f"{','.join(sorted(entry.processes))}{mark}")
    rows.append("")
    for label, chosen in (("all", files), ("excluding CLI start-up", [f for f in files if not is_cli_start_up(f.path)])):
        count, lines, ran = totals(chosen)
        rows.append(f"{label + ':':<24} {count:>3} files, {lines:>6,} lines ({ran:,} lines in functions that ran)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=BROKER_URL, help="kombu URL (default: the local RabbitMQ)")
    parser.add_argument("--json", action="store_true", help="print the files as JSON instead of a table")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="taskq-task-path-"))
    try:
        out, roles = measure(args.broker, scratch)
        files = collect(out, roles)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps([entry.as_dict() for entry in files], indent=1))
    else:
        print(report(files, taskq_root()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
