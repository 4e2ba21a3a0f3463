"""docs/quickstart.md works as written: every python and sh block, in order, in an empty folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection

from tests.support import ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((ROOT / "docs" / "quickstart.md").read_text())


def test_the_page_has_runnable_blocks():
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("sh") >= 3 and kinds.count("python") >= 3 and kinds.count("text") >= 3


def test_quickstart_runs_as_written(broker_url, tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("TASKQ_HOME", None)
    if broker_url.startswith("amqp"):
        env["TASKQ_BROKER_URL"] = broker_url
    else:
        env.pop("TASKQ_BROKER_URL", None)  # the page's promise: no broker configured, the embedded one
    last_output, ran = None, 0
    try:
        for kind, code in blocks():
            if kind == "python" and code.startswith("# file: "):
                name = code.splitlines()[0].removeprefix("# file: ").strip()
                (tmp_path / name).write_text(code)
                continue
            if kind == "text":
                assert last_output is not None, f"a text block follows nothing that ran:\n{code}"
                assert last_output.splitlines() == code.splitlines(), f"expected:\n{code}\ngot:\n{last_output}"
                last_output = None
                continue
            if kind not in ("python", "sh"):
                continue
            command = [sys.executable, "-c", code] if kind == "python" else ["bash", "-ec", code]
            done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False)
            assert done.returncode == 0, f"{kind} block failed:\n{code}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            last_output, ran = done.stdout, ran + 1
        assert ran >= 5
        if "TASKQ_BROKER_URL" not in env:
            assert (tmp_path / ".taskq" / "broker.db").exists()  # it really used the embedded broker
    finally:
        pid_file = tmp_path / "worker.pid"
        if pid_file.exists():  # the page stops its worker; if a block failed first, stop it here
            pid = int(pid_file.read_text())
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not alive(pid), timeout=30, what="the quickstart's worker to exit")
        if broker_url.startswith("amqp"):
            with Connection(broker_url) as connection, connection.channel() as channel:
                for queue in ("quickstart", "quickstart.dead"):  # the page's queue, and its failed task
                    try:
                        channel.queue_delete(queue)
                    except Exception:
                        pass


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
