"""The Procfile runs under honcho: the flash sale's HTTP front, its workers and a log tail into a file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kombu import Connection

from tests.support import ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]
HONCHO = shutil.which("honcho", path=str(Path(sys.executable).parent)) or shutil.which("honcho")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [child for p in out for child in (int(p), *descendants(int(p)))]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def post(url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=60) as response:
        return json.loads(response.read())


def get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


@pytest.mark.skipif(HONCHO is None, reason="honcho is not installed (pip install -e '.[dev]')")
def test_procfile_under_honcho(broker_url, tmp_path):
    queue = f"test.flash_sale.{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1", "TASKQ_BROKER_URL": broker_url, "FLASH_SALE_QUEUE": queue,
        "FLASH_SALE_DB": str(tmp_path / "shop.db"), "FLASH_SALE_STOCK": "5",
    }
    output = tmp_path / "honcho.out"
    with open(output, "wb") as out:
        honcho = subprocess.Popen([HONCHO, "-f", str(ROOT / "Procfile"), "-d", str(tmp_path), "start", "-p", str(port)],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: honcho.poll() is not None or get(f"{base}/stats"), timeout=60, what="the front to answer")
        assert honcho.poll() is None, output.read_text()
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda n: post(f"{base}/buy?user=u{n}&attempt=a{n}"), range(20)))
        outcomes = sorted(a["outcome"] for a in answers)
        assert outcomes == ["bought"] * 5 + ["sold out"] * 15
        assert post(f"{base}/buy?user=u0&attempt=a0") == answers[0]  # a retried request: same answer
        assert get(f"{base}/stats") == {"orders": 5, "stock_left": 0, "attempts": 20}
        # The log tail binds its queue on its own time: keep the workers logging until lines arrive.
        log_file = tmp_path / "flash_sale.log"
        def tail_has_a_task() -> bool:
            if log_file.exists() and f"queue={queue}" in log_file.read_text():
                return True
            post(f"{base}/buy?user=late")  # another task, logged once the tail listens
            return False

        wait_until(tail_has_a_task, timeout=60, interval=0.2, what="the task's lines in flash_sale.log")
        processes = descendants(honcho.pid)
        assert len(processes) >= 3, output.read_text()
    finally:
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGTERM)
        try:
            code = honcho.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            raise
        with Connection(broker_url) as connection, connection.channel() as channel:
            for name in (queue, queue + ".dead"):
                try:
                    channel.queue_delete(name)
                except Exception:
                    pass
    log = output.read_text()
    wait_until(lambda: not any(alive(pid) for pid in processes), timeout=30, what="every process to exit")
    assert code in (0, 128 + signal.SIGTERM), log  # honcho reports the SIGTERM it was stopped with
    for name in ("front", "worker", "logs"):
        assert f"{name}.1 stopped (rc=0)" in log, log  # each stopped cleanly on its SIGTERM
    assert "flash sale front stopped" in log
    assert "taskq logs: received" in log  # the log tail printed its summary: it stopped cleanly
    tail = log_file.read_text().splitlines()
    assert tail and all("app=flash_sale" in line for line in tail), tail  # the workers' lines, only this app's
    assert any(f"queue={queue}" in line and "task succeeded" in line for line in tail), tail
