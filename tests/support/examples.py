"""Running the examples/ as a user runs them: ``python -m examples.NAME`` from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def run_module(args: list[str], broker_url: str, tmp_path: Path, timeout: float = 120) -> str:
    """Run ``python -m ARGS``; its output files (the examples write under TMPDIR) land in ``tmp_path``."""
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "TASKQ_BROKER_URL": broker_url, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
