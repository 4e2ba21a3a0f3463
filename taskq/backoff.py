"""How long to wait before trying again: one exponential backoff with "equal jitter".

Publishers reconnecting, listeners and worker children reconnecting, and failed tasks
being retried all wait the same way. The jitter is a uniform pick in the upper half of
each step: a fleet that failed together (a broker restart, a database gone) comes back
spread out, yet every wait still grows, unlike full jitter, which can retry at once.
"""

from __future__ import annotations

import random

from taskq import settings

# 2.0 ** 1024 overflows a float; by then any real cap has long been reached.
_LARGEST_EXPONENT = 1023


def jittered_backoff(
    attempt: int, *, first: float, cap: float, jitter: bool = True, rng: random.Random | None = None
) -> float:
    """Seconds to wait after ``attempt`` earlier tries failed (0 for the first wait):
    ``first`` doubling up to ``cap``, then a pick in the upper half of that step."""
    step = min(cap, first * 2.0 ** min(attempt, _LARGEST_EXPONENT))
    if not jitter or step <= 0:
        return step
    return (rng or random).uniform(step / 2, step)


def reconnect_backoff(attempt: int) -> float:
    """The wait before a long-lived connection (a listener, the dashboard, a worker child)
    connects again after ``attempt`` failed tries."""
    return jittered_backoff(attempt, first=settings.RECONNECT_BACKOFF_FIRST, cap=settings.RECONNECT_BACKOFF_MAX)
