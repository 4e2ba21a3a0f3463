"""The drain tests' apps (tests/support/drain.py): one line per execution of ``note``.

``app`` has quorum queues (``-A tests.support.cluster_app:app``, the cluster test); ``classic_app``
the same task on classic queues (``:classic_app``, a single node's crash).
"""

from __future__ import annotations

import time

from taskq import App
from tests.support.apps import append_line

app = App("cluster", queue_type="quorum")
classic_app = App("single-node")
WORK_SECONDS = 0.005  # long enough that a drain lasts past the broker's loss, short enough to stay fast


def _note(path: str, number: int) -> None:
    time.sleep(WORK_SECONDS)
    append_line(path, f"{number} {time.time():.6f}")


note = app.task(ignore_result=True, name="tests.support.cluster_app.note")(_note)
classic_app.task(ignore_result=True, name="tests.support.cluster_app.note")(_note)
