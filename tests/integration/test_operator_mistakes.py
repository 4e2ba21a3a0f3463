"""An operator's mistakes, made through the real ``taskq`` command: one clear line, never a
traceback, never a loop that doesn't end.

A broker URL taskq can't use and an app that can't be loaded are exit 2 (fix the command
line); a broker that refuses the login or the vhost is exit 1, like a broker that is down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.cli_helpers import taskq

APP = "tests.support.event_apps:app"
SECRET = "s3cretpw"  # in every bad URL below: it must never be printed
QUEUE = "taskq-operator-mistakes"

# Every command that talks to a broker, as an operator would type it.
COMMANDS = {
    "worker": ["worker", "-A", APP, "-c", "1"],
    "status": ["status", "-A", APP, "--wait", "0.5"],
    "logs": ["logs"],
    "events": ["events"],
    "dead list": ["dead", "list", QUEUE],
    "dead replay": ["dead", "replay", QUEUE, "--all"],
    "dead purge": ["dead", "purge", QUEUE, "--yes"],
    "purge": ["purge", QUEUE, "--yes"],
    "call": ["call", "tests.support.event_apps.noop", "-A", APP],
}


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int, *fragments: str) -> str:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert SECRET not in result.stderr + result.stdout
    return lines[0]


# -- broker URLs taskq can't use ---------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "url, fragments",
    [
        (f"garbage://guest:{SECRET}@x//", ["unsupported broker transport 'garbage'", "amqp://", "taskq+sqlite://"]),
        (f"redis://guest:{SECRET}@localhost:6379/0", ["unsupported broker transport 'redis'", "amqp://"]),
        (f"amqp://guest:{SECRET}@h:abc//", ["can't be parsed", "amqp://guest:**@h:abc//"]),
        (f"amqp://guest:guest@127.0.0.1:5672//;amqp://guest:{SECRET}@h:99999//", ["can't be parsed", "amqp://guest:**@h:99999//"]),
    ],
    ids=["garbage", "redis", "port-abc", "second-url-port"],
)
def test_a_broker_url_taskq_cannot_use_is_one_line_and_exit_2(command, url, fragments):
    # Through $TASKQ_BROKER_URL, as --broker's default: the same check covers both.
    assert_one_line_error(taskq(*COMMANDS[command], broker_url=url), 2, *fragments)


def test_the_broker_option_is_checked_like_the_environment(broker_url):
    result = taskq("status", "-A", APP, "--broker", f"garbage://guest:{SECRET}@x//", broker_url=broker_url)
    assert_one_line_error(result, 2, "unsupported broker transport 'garbage'")


# -- apps that can't be loaded -----------------------------------------------------------------


USER_MODULES = {
    "mistake_syntax.py": """\
        from taskq import App

        app = App("mistake")
        def broken(:
            pass
    """,
    "mistake_import.py": """\
        from taskq import App
        import mistake_no_such_dependency

        app = App("mistake")
    """,
    # The error is in a module the user's module imports: that one's line is shown.
    "mistake_outer.py": """\
        from taskq import App
        import mistake_inner

        app = App("mistake")
    """,
    "mistake_inner.py": """\
        CONFIG = {}
        PORT = CONFIG["port"]
    """,
    # Its name starts with the missing module's: still the user's own import error.
    "mistake_tasks.py": """\
        import mistake
    """,
    "mistake_apps.py": """\
        from taskq import App

        app = App("mistake")
        worker_app = App("mistake-worker")
        not_an_app = 42
    """,
}


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's modules, importable by the ``taskq`` subprocesses (and only by them)."""
    for name, source in USER_MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("command", ["worker", "status"])
@pytest.mark.parametrize(
    "app_path, fragments",
    [
        ("tests.no_such_module:app", ["-A 'tests.no_such_module:app': no module named 'tests.no_such_module'"]),
        ("mistake_syntax:app", ["mistake_syntax.py:4: SyntaxError: "]),
        ("mistake_import:app", ["mistake_import.py:2: ModuleNotFoundError: No module named 'mistake_no_such_dependency'"]),
        ("mistake_outer:app", ["mistake_inner.py:2: KeyError: 'port'"]),
        ("mistake_tasks:app", ["mistake_tasks.py:1: ModuleNotFoundError: No module named 'mistake'"]),
        ("mistake_apps:not_an_app", ["mistake_apps.not_an_app is not a taskq App (int)", "its Apps: app, worker_app"]),
        ("mistake_apps:nothing", ["mistake_apps has no attribute 'nothing'", "its Apps: app, worker_app"]),
        ("tests.support.event_apps:noop", ["tests.support.event_apps.noop is not a taskq App (Task)", "its Apps: app, billing, routed, shop"]),
    ],
    ids=["no-module", "syntax", "import", "inner-error", "prefix-name", "not-an-app", "no-attribute", "a-task"],
)
def test_an_app_that_cannot_be_loaded_is_one_line_and_exit_2(user_modules, broker_url, command, app_path, fragments):
    args = [arg if arg != APP else app_path for arg in COMMANDS[command]]
    line = assert_one_line_error(taskq(*args, broker_url=broker_url), 2, *fragments)
    assert "importlib" not in line and "click" not in line
    if ".py:" in fragments[0]:
        assert f" {user_modules}/mistake_" in line  # the user's own file, where they can find it


# -- a broker that refuses us ------------------------------------------------------------------

REFUSING = {
    "wrong-password": (f"amqp://guest:{SECRET}@127.0.0.1:5672//", "ACCESS_REFUSED"),
    "no-vhost": ("amqp://guest:guest@127.0.0.1:5672/taskq-no-such-vhost", "NOT_ALLOWED"),
}


@pytest.mark.parametrize("command", [name for name in COMMANDS if name != "worker"])
@pytest.mark.parametrize("refusal", REFUSING)
def test_a_command_the_broker_refuses_says_so_in_one_line(broker_url, command, refusal):
    url, code = REFUSING[refusal]
    result = taskq(*COMMANDS[command], broker_url=url)
    # call's line comes from the result listener (results.py), which words it its own way.
    assert_one_line_error(result, 1, code, *(["refused the connection"] if command != "call" else []))


@pytest.mark.parametrize("refusal", REFUSING)
def test_a_worker_the_broker_refuses_stops_instead_of_reconnecting_forever(broker_url, refusal, tmp_path):
    """Each child tries a few times, then exits; the supervisor forks no more and exits 1."""
    url, code = REFUSING[refusal]
    command = [sys.executable, "-m", "taskq", "worker", "-A", APP, "-c", "2", "--broker", url, "--log-format", "json"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=120)  # a bound on a loop that must end, not a timing
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the children too: an endless loop must not outlive the test
        process.communicate()
        pytest.fail("the worker kept reconnecting to a broker that refuses it")
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr and SECRET not in stderr
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert not [r for r in records if r["event"].startswith("child died")], stderr  # no child was replaced
    errors = [r for r in records if r["level"] == "error"]
    assert errors and all("refused" in r["event"] for r in errors), stderr
    assert any(code in r.get("error", "") for r in errors), stderr
    [stopping] = [r for r in errors if "stopping the worker" in r["event"]]
    assert stopping["pid"] == process.pid
