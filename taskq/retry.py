"""What happens after a task attempt fails: another attempt later, or the end of the road.

Plain functions of the task's options, the exception and the attempt count, with no
broker in sight, so every rule here is unit-tested without a worker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from taskq import settings
from taskq.backoff import jittered_backoff
from taskq.errors import Retry
from taskq.settings import EXPLICIT_RETRY_LIMIT



@dataclass(frozen=True)
class RetryRules:
    """A task's retry options, as given to ``@app.task``.

    ``max_retries=None`` (the default) means failures are not retried; an explicit
    ``raise Retry()`` is still honoured, up to ``EXPLICIT_RETRY_LIMIT`` times.
    """

    max_retries: int | None = None
    retry_backoff: float = settings.RETRY_BACKOFF
    retry_backoff_max: float = settings.RETRY_BACKOFF_MAX
    retry_jitter: bool = settings.RETRY_JITTER
    retry_for: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.retry_backoff < 0 or self.retry_backoff_max < 0:
            raise ValueError("retry_backoff and retry_backoff_max must be >= 0")
        if not all(isinstance(cls, type) and issubclass(cls, BaseException) for cls in self.retry_for):
            raise ValueError("retry_for must be exception classes")


@dataclass(frozen=True)
class Decision:
    """``retry`` with ``countdown`` seconds, or give up with ``reason`` (a dead-letter reason code)."""

    retry: bool
    countdown: float = 0.0
    reason: str = ""
    cause: BaseException | None = None  # what the final failure should report


def backoff(attempts: int, rules: RetryRules, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempts + 1``: the task's own backoff options."""
    return jittered_backoff(
        attempts, first=rules.retry_backoff, cap=rules.retry_backoff_max, jitter=rules.retry_jitter, rng=rng
    )


def decide(rules: RetryRules, exc: BaseException, attempts: int, rng: random.Random | None = None) -> Decision:
    """After attempt number ``attempts + 1`` raised ``exc``: retry it, or stop and say why.

    ``attempts`` counts the attempts that already failed before this one.
    """
    if isinstance(exc, Retry):
        limit = exc.max_retries if exc.max_retries is not None else rules.max_retries
        if limit is None:
            limit = EXPLICIT_RETRY_LIMIT
        cause = exc.__cause__ or exc
        if attempts >= limit:
            return Decision(retry=False, reason="retries-exhausted", cause=cause)
        countdown = exc.countdown if exc.countdown is not None else backoff(attempts, rules, rng)
        return Decision(retry=True, countdown=max(0.0, float(countdown)), cause=cause)
    if not rules.max_retries or not isinstance(exc, rules.retry_for):
        return Decision(retry=False, reason="failed", cause=exc)
    if attempts >= rules.max_retries:
        return Decision(retry=False, reason="retries-exhausted", cause=exc)
    return Decision(retry=True, countdown=backoff(attempts, rules, rng), cause=exc)
