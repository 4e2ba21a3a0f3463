"""docs/configuration.md names every App argument and every TASKQ_ environment variable taskq reads."""

from __future__ import annotations

import inspect
import re

from taskq import App
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "configuration.md").read_text()


def test_every_app_argument_is_documented():
    parameters = [name for name in inspect.signature(App.__init__).parameters if name != "self"]
    assert parameters, "App.__init__ has no parameters?"
    missing = [name for name in parameters if f"`{name}`" not in DOC]
    assert not missing, f"App arguments missing from docs/configuration.md: {missing}"


def test_every_taskq_environment_variable_is_documented():
    names = set()
    for path in (ROOT / "taskq").rglob("*.py"):
        names.update(re.findall(r"\bTASKQ_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert "TASKQ_BROKER_URL" in names  # the scan itself works
    missing = sorted(name for name in names if f"`{name}`" not in DOC)
    assert not missing, f"TASKQ_ variables missing from docs/configuration.md: {missing}"
