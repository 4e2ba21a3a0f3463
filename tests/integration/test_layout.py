"""The layout holds for a user: ``python -m taskq`` and the ``taskq`` console script reach the
same click group (the import-graph rules are in tests/unit/test_layout.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_python_m_taskq_and_the_console_script_reach_the_same_group():
    out = subprocess.run([sys.executable, "-m", "taskq", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "worker" in out.stdout and "dashboard" in out.stdout, out.stderr
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'taskq = "taskq.cli:main"' in pyproject
    from taskq.cli import main

    assert sorted(main.commands) == ["call", "dashboard", "dead", "events", "logs", "purge", "result", "revoke", "scheduler", "status", "worker"]
