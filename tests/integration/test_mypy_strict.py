"""``mypy --strict`` holds on taskq/, with pyproject's [tool.mypy] (the same run CI and a developer do).

Files still being made strict by other work are listed in ``NOT_YET_STRICT``: their errors are
left out, every other file must be clean. An entry that has become clean (or no longer exists)
fails the second test, so the list only ever shrinks, until it is empty.
Here, not in tests/unit: it runs mypy in a subprocess (about 5 s), as a user would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.support import ROOT

#: Paths relative to the checkout; one ending in "/" stands for everything under that folder.
#: Each is being reworked elsewhere (issue 14); take it out when it lands strict-clean.
NOT_YET_STRICT = (
    "taskq/app.py",
    "taskq/dashboard/feed.py",
    "taskq/worker/child.py",
    "taskq/worker/parent_death.py",
    "taskq/worker/supervisor.py",
)

ERROR = re.compile(r"^(?P<path>[^:\s]+\.pyi?):(?P<line>\d+): error: (?P<text>.*)$")


def errors_by_file(output: str) -> dict[str, list[str]]:
    """``{"taskq/x.py": ["12: error text [code]", ...]}`` from mypy's output (notes dropped)."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        match = ERROR.match(line)
        if match:
            found.setdefault(Path(match["path"]).as_posix(), []).append(f"{match['line']}: {match['text']}")
    return found


def covered(path: str, entries: Iterable[str] = NOT_YET_STRICT) -> bool:
    return any(path.startswith(entry) if entry.endswith("/") else path == entry for entry in entries)


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    cache = tmp_path_factory.mktemp("mypy-cache")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--show-error-codes", "--no-error-summary",
         "--no-pretty", "--cache-dir", str(cache), "taskq"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    # 0: clean, 1: type errors; anything else is mypy failing to run (a bad config, a crash).
    assert run.returncode in (0, 1), f"mypy did not run (exit {run.returncode}):\n{run.stderr or run.stdout}"
    found = errors_by_file(run.stdout)
    assert (run.returncode == 1) == bool(found), f"mypy's exit {run.returncode} disagrees with its output:\n{run.stdout}"
    return found


def test_mypy_strict_is_clean_outside_the_files_not_yet_strict(mypy_errors: dict[str, list[str]]) -> None:
    unexpected = {path: lines for path, lines in mypy_errors.items() if not covered(path)}
    listing = "\n".join(f"{path}:{line}" for path, lines in sorted(unexpected.items()) for line in lines)
    assert not unexpected, f"mypy --strict errors in {len(unexpected)} file(s) that must be strict:\n{listing}"


def test_not_yet_strict_lists_only_files_that_still_have_errors(mypy_errors: dict[str, list[str]]) -> None:
    missing = [entry for entry in NOT_YET_STRICT if not (ROOT / entry).exists()]
    assert not missing, f"NOT_YET_STRICT names what is not in the checkout (renamed?): {', '.join(missing)}"
    clean = [entry for entry in NOT_YET_STRICT if not any(covered(path, [entry]) for path in mypy_errors)]
    assert not clean, f"now mypy --strict clean, so take them out of NOT_YET_STRICT: {', '.join(clean)}"


def test_the_error_lines_are_read_as_mypy_writes_them() -> None:
    output = (
        "taskq/app.py:74: error: Missing type arguments for generic type \"tuple\"  [type-arg]\n"
        "taskq/app.py:74: note: See https://mypy.readthedocs.io\n"
        "taskq/worker/child.py:28: error: Module \"taskq.message\" has no attribute \"X\"  [attr-defined]\n"
    )
    found = errors_by_file(output)
    assert found == {
        "taskq/app.py": ['74: Missing type arguments for generic type "tuple"  [type-arg]'],
        "taskq/worker/child.py": ['28: Module "taskq.message" has no attribute "X"  [attr-defined]'],
    }
    assert covered("taskq/worker/child.py") and covered("taskq/app.py")
    assert not covered("taskq/application.py", ["taskq/app.py"]) and not covered("taskq/workers.py", ["taskq/worker/"])
