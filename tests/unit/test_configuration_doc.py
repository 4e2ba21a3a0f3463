"""docs/configuration.md names every App argument, every TASKQ_ environment variable taskq reads
and every default in taskq/settings.py, with its value; and settings.py is where they are written."""

from __future__ import annotations

import inspect
import re

from taskq import App, settings
from tests.support import ROOT

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


def settings_constants() -> dict[str, object]:
    return {name: value for name, value in vars(settings).items() if name.isupper()}


def test_every_default_in_settings_is_documented_with_its_value():
    constants = settings_constants()
    assert "BROKER_URL_ENV" in constants
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", DOC, re.MULTILINE))
    shown = {name: f'"{value}"' if isinstance(value, str) else repr(value) for name, value in constants.items()}
    wrong = {name: (value, rows.get(name)) for name, value in shown.items() if rows.get(name) != value}
    assert not wrong, f"settings.py (value, what docs/configuration.md says): {wrong}"


def test_every_taskq_variable_is_named_in_settings():
    declared = {value for name, value in settings_constants().items() if name.endswith("_ENV")}
    used = set()
    for path in (ROOT / "taskq").rglob("*.py"):
        used.update(re.findall(r"\bTASKQ_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert used <= declared, f"TASKQ_ variables not in taskq/settings.py: {sorted(used - declared)}"


def test_the_code_reads_no_variable_by_its_spelled_name():
    # A name spelled again in a module is a second place to change: read it through settings.
    spelled = []
    for path in (ROOT / "taskq").rglob("*.py"):
        if path.name == "settings.py":
            continue
        spelled += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r"[\"']TASKQ_[A-Z0-9_]+[\"']", path.read_text())]
    assert not spelled, spelled


def test_app_defaults_come_from_settings():
    defaults = {name: p.default for name, p in inspect.signature(App.__init__).parameters.items()}
    assert (defaults["name"], defaults["default_queue"], defaults["heartbeat"], defaults["queue_type"]) == (
        settings.APP_NAME, settings.DEFAULT_QUEUE, settings.HEARTBEAT, settings.QUEUE_TYPE)


def test_task_retry_defaults_come_from_settings():
    app = App("defaults", broker="memory://")

    @app.task
    def job() -> None: ...

    options = job.options.settings
    assert (options["retry_backoff"], options["retry_backoff_max"], options["retry_jitter"]) == (
        settings.RETRY_BACKOFF, settings.RETRY_BACKOFF_MAX, settings.RETRY_JITTER)
