"""What the tests share and are not tests: apps the worker subprocesses load, broker nodes,
command runners, a TCP proxy, fixtures imported by name. Nothing here is collected by pytest.

``tests/unit`` needs none of the broker parts; ``tests/integration`` uses them all.
"""

from __future__ import annotations

from pathlib import Path

#: The checkout under test: the working directory of every subprocess a test starts.
ROOT = Path(__file__).resolve().parent.parent.parent
