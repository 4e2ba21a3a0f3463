"""Sphinx settings for the API reference: autodoc renders taskq's own docstrings, so the
reference is only as stale as the code. Build: ``python -m sphinx -W -b html docs/api build/api``."""

from __future__ import annotations

import sys
from pathlib import Path

# The checkout this file belongs to, not whichever taskq happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

project = "taskq"
author = "taskq authors"
copyright = "2026, taskq authors"
extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "alabaster"  # Sphinx's own: nothing else to install, nothing fetched
html_static_path: list[str] = []
