"""Each example runs with one command and does what it says (its outcome, not just exit 0)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def run_example(name: str, broker_url: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{name}"], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TASKQ_BROKER_URL": broker_url},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_hello(broker_url):
    assert run_example("hello", broker_url).strip() == "Hello, world!"


def test_work_queue_round_robin_and_fair_dispatch(broker_url):
    out = run_example("work_queue", broker_url)
    round_robin_workers = re.findall(r"task\d\s+ran on worker (\d+)", out)
    assert len(round_robin_workers) == 8 and len(set(round_robin_workers)) == 2
    assert "every short task finished before the long one, on the other worker: True" in out


def test_rpc_several_servers(broker_url):
    out = run_example("rpc", broker_url)
    assert "fib(90) = 2880067194370816120" in out
    assert "9 requests answered by 3 servers" in out


def test_demo(broker_url):
    out = run_example("demo", broker_url)
    assert "results: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in out
    assert "worker stopped cleanly (exit 0)" in out
