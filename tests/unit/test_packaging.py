"""What people are told to install is what it is: every ``pip install`` shown names our distribution
(the wheel itself is built and read in tests/integration/test_packaging.py)."""

from __future__ import annotations

import re

from tests.support import ROOT

BARE_NAME_INSTALL = re.compile(r"pip install\s+['\"]?taskq(?![\w-])")  # would fetch that other project


def test_no_install_line_names_the_other_project():
    """Every ``pip install`` a user is shown, in the docs or in a message, names our distribution."""
    shown = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "taskq").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    wrong = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in shown
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if BARE_NAME_INSTALL.search(line)
    ]
    assert not wrong, "pip install of the unrelated 'taskq':\n" + "\n".join(wrong)
