"""The dashboard tests' helpers: a ``taskq dashboard`` subprocess, and the rule for a missing
tool (skip, but fail under CI=true). Test modules import the ``dashboard_deps`` fixture by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.waiting import wait_until

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(problem: str | None) -> None:
    """Skip for a missing tool, with the reason; under CI=true fail instead: CI must run this test."""
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem}; CI=true requires the dashboard browser test to run", pytrace=False)
    pytest.skip(problem)


class Dashboard:
    """A ``taskq dashboard --port 0`` subprocess; ``url`` is what it printed once listening."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskq", "dashboard", "--port", "0", *args],
                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT,
            )
        line = wait_until(lambda: self._listening_line() or self.process.poll() is not None, what="the dashboard listening")
        assert self.process.poll() is None, f"dashboard exited:\n{self.log()}"
        self.url = line.split()[2]
        wait_until(self._answers, what="the dashboard answering HTTP")

    def _listening_line(self) -> str | None:
        return next((line for line in self.log().splitlines() if line.startswith("taskq dashboard: http")), None)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                return response.status == 200
        except urllib.error.HTTPError:  # an answer all the same (401 without its token)
            return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def dashboard_deps():
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        require("the dashboard extra is not installed (pip install -e '.[dashboard]')")
