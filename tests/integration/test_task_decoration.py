"""A worker whose app has a task ``@app.task`` refuses (tests/unit/test_task_decoration.py)
stops at start with one line naming the user's own line, rather than failing every call."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def test_worker_whose_app_has_a_generator_task_prints_one_line_and_exits_2(tmp_path):
    (tmp_path / "async_app.py").write_text(
        "from taskq import App\napp = App('a')\n\n@app.task\ndef fetch(url):\n    yield url\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "worker", "-A", "async_app:app", "-c", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "TASKQ_BROKER_URL": f"taskq+sqlite://{tmp_path / 'broker.db'}"},
    )
    assert done.returncode == 2
    # One line, naming the user's own decorated line (the loader shows the user's frame).
    assert done.stderr.strip().splitlines() == [
        f"Error: -A 'async_app:app': {tmp_path / 'async_app.py'}:4: UnsupportedTask: task 'async_app.fetch':"
        " a generator function can't be a task: calling it runs none of its body; return a list from a plain def instead"
    ]
