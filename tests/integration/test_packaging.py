"""The wheel people install says what it is: its name on the index, its licence, and that it is
typed (built by pip, so here; the install lines of the docs are checked in tests/unit/test_packaging.py)."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile

from tests.support import ROOT

DISTRIBUTION = "taskq-rabbitmq"  # "taskq" on the package index is an unrelated project


def test_the_wheel_carries_its_name_licence_and_py_typed(tmp_path):
    # Built from a copy: setuptools builds in the source tree, and a build/ left there from an
    # earlier build would lend the wheel files the checkout no longer has.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", ".taskq", "__pycache__", "bench", "examples", "tests",
    ))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=240,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
        assert metadata["Name"] == DISTRIBUTION
        assert metadata["License-Expression"] == "MIT"
        assert metadata.get_all("License-File") == ["LICENSE"]
        licence = archive.read(metadata_name.replace("METADATA", "licenses/LICENSE")).decode()
    assert licence.startswith("MIT License") and "2026 taskq authors" in licence
    assert "taskq/py.typed" in names, "without py.typed, mypy treats an installed taskq as untyped"
    classifiers = metadata.get_all("Classifier")
    assert "Typing :: Typed" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], "the SPDX expression replaces licence classifiers"
