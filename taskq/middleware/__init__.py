"""Middleware: what the worker does around each task, as ordered, pluggable steps.

``App(middleware=[...])`` replaces the defaults below; ``app.add_middleware(m, before=...,
after=...)`` adds one. See docs/middleware.md.
"""

from __future__ import annotations

from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Outcome, Redelay, Retry, Skip, Succeeded
from taskq.middleware.eta import EtaRedelay
from taskq.middleware.expiry import Expiry
from taskq.middleware.pipeline import Middleware, WorkerInfo
from taskq.middleware.retries import Retries
from taskq.middleware.revocation import Revocations
from taskq.middleware.time_limits import TimeLimits


def default_middleware() -> list[Middleware]:
    """What every App has unless told otherwise, in the order their hooks run.

    (The lifecycle-events middleware is added by each worker child, which owns the
    broadcaster: an in-process test worker broadcasts nothing.)
    """
    return [Revocations(), Expiry(), EtaRedelay(), Retries(), TimeLimits()]


__all__ = [
    "DeadLetter", "Decision", "Delivery", "EtaRedelay", "Expiry", "Middleware", "Outcome", "Redelay", "Retries",
    "Retry", "Revocations", "Skip", "Succeeded", "TimeLimits", "WorkerInfo", "default_middleware",
]
