"""Smoke tests for the benchmark harness (``python -m bench.compare``) and the other bench scripts, at tiny sizes.

It checks the harness works end to end, not how fast anything is: every system that can run here
gets a row of positive numbers. Raw kombu must run (it is the baseline every ratio divides by);
taskq, Celery and Dramatiq are reported, not failed, when they can't be imported here (the peers
are the optional ``bench`` extra).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from bench.compare import COLUMNS, Settings, render_table, run
from tests.support import ROOT

SYSTEMS = ["kombu", "taskq", "celery", "dramatiq"]


@pytest.mark.broker
def test_harness_produces_a_row_per_system(broker_url: str) -> None:
    # broker_url: RabbitMQ reachable (skip locally, fail under CI=true); bench reads the same
    # TASKQ_TEST_BROKER_URL, so both point at it.
    settings = Settings(drain_n=20, enqueue_n=20, rpc_n=10, warmup=2, only=SYSTEMS)
    rows = run(settings)
    table = render_table(rows)
    print(table)

    main_rows = {row.system: row for row in rows if not row.reference}
    assert list(main_rows) == SYSTEMS
    table_lines = table.splitlines()
    for name in SYSTEMS:
        assert any(line.startswith(name + " ") for line in table_lines), f"no table line for {name}"

    for name, row in main_rows.items():
        if row.status.startswith("unavailable") and name != "kombu":
            warnings.warn(f"bench smoke: {name} {row.status}", stacklevel=1)
            continue
        assert row.status == "ok", f"{name}: {row.status}: {row.errors}"
        for attr, header, _ in COLUMNS:
            value = getattr(row, attr)
            assert value is not None and value > 0, f"{name}: {header} is {value!r}"

    for row in rows:
        if row.reference:
            assert row.enqueue_per_s is not None and row.enqueue_per_s > 0, row.system


@pytest.mark.broker
def test_envelope_cost_prints_a_row_per_shape(broker_url: str) -> None:
    from bench.envelope_cost import shapes

    done = subprocess.run(
        [sys.executable, "-m", "bench.envelope_cost", "--n", "20", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = {line[:14].strip(): line[14:].split() for line in done.stdout.splitlines()[2:]}
    assert list(rows) == list(shapes())
    for name, (size, rate, rate_ratio, cpu, cpu_ratio) in rows.items():
        assert int(size) > 0 and float(rate.replace(",", "")) > 0, (name, rows[name])


def test_handle_cost_runs_without_a_broker() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.handle_cost", "20", "--cprofile"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first, calls = done.stdout.splitlines()[:2]
    assert first.startswith("20 messages") and float(first.split("CPU ")[1].split()[0]) > 0, first
    assert float(calls.split()[0]) > 0, calls
