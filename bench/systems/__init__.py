"""One module per benchmarked system, all with the interface described in ``base.System``.

A system module's ``load()`` imports the framework lazily and raises ``Unavailable`` with the
reason if it can't, so a missing peer (or a taskq whose API isn't there yet) becomes a row that
says why instead of a crash.
"""

from __future__ import annotations

import importlib

from bench.common import Unavailable
from bench.systems.base import System

#: Benchmark order; raw kombu first because every other row is divided by it.
SYSTEM_MODULES: dict[str, str] = {
    "kombu": "bench.systems.kombu_system",
    "taskq": "bench.systems.taskq_system",
    "celery": "bench.systems.celery_system",
    "dramatiq": "bench.systems.dramatiq_system",
}


def load_system(name: str) -> System:
    """Build the runner for *name*, or raise ``Unavailable`` saying why it can't run here."""
    try:
        module = importlib.import_module(SYSTEM_MODULES[name])
        return module.load()
    except Unavailable:
        raise
    except ImportError as exc:
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
