"""Retries: after a failed run, another attempt later or a dead letter.

The rules (``RetryRules``, ``decide``, ``backoff``) are plain functions of the task's options,
the exception and the attempt count, with no broker in sight, so each is unit-tested without
a worker; ``Retries``, the middleware, asks them at ``decide_failure``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from taskq import errors, settings
from taskq.backoff import jittered_backoff
from taskq.middleware.delivery import DeadLetter, Delivery, Retry, dead_letter_failure, failure
from taskq.middleware.pipeline import Middleware
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
class RetryVerdict:
    """What ``decide`` says: ``retry`` with ``countdown`` seconds, or give up with ``reason`` (a
    dead-letter reason code). The middleware turns it into the pipeline's Retry or DeadLetter."""

    retry: bool
    countdown: float = 0.0
    reason: str = ""
    cause: BaseException | None = None  # what the final failure should report


def backoff(attempts: int, rules: RetryRules, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempts + 1``: the task's own backoff options."""
    return jittered_backoff(
        attempts, first=rules.retry_backoff, cap=rules.retry_backoff_max, jitter=rules.retry_jitter, rng=rng
    )


def decide(rules: RetryRules, exc: BaseException, attempts: int, rng: random.Random | None = None) -> RetryVerdict:
    """After attempt number ``attempts + 1`` raised ``exc``: retry it, or stop and say why.

    ``attempts`` counts the attempts that already failed before this one.
    """
    if isinstance(exc, errors.Retry):
        limit = exc.max_retries if exc.max_retries is not None else rules.max_retries
        if limit is None:
            limit = EXPLICIT_RETRY_LIMIT
        cause = exc.__cause__ or exc
        if attempts >= limit:
            return RetryVerdict(retry=False, reason="retries-exhausted", cause=cause)
        countdown = exc.countdown if exc.countdown is not None else backoff(attempts, rules, rng)
        return RetryVerdict(retry=True, countdown=max(0.0, float(countdown)), cause=cause)
    if not rules.max_retries or not isinstance(exc, rules.retry_for):
        return RetryVerdict(retry=False, reason="failed", cause=exc)
    if attempts >= rules.max_retries:
        return RetryVerdict(retry=False, reason="retries-exhausted", cause=exc)
    return RetryVerdict(retry=True, countdown=backoff(attempts, rules, rng), cause=exc)


def rules_from(options: Mapping[str, Any]) -> RetryRules:
    """The RetryRules a task's options say (ValueError for a value that can't work)."""
    retry_for = options.get("retry_for", (Exception,))
    return RetryRules(
        max_retries=options.get("max_retries"),
        retry_backoff=options.get("retry_backoff", 1.0),
        retry_backoff_max=options.get("retry_backoff_max", 600.0),
        retry_jitter=options.get("retry_jitter", True),
        retry_for=(retry_for,) if isinstance(retry_for, type) else tuple(retry_for),
    )


class Retries(Middleware):
    """Failures are not retried unless ``max_retries`` is set; then exceptions in
    ``retry_for`` are retried after ``retry_backoff * 2**attempt`` seconds (capped by
    ``retry_backoff_max``, jittered unless ``retry_jitter=False``). ``raise Retry()`` in a
    task asks for one explicitly.
    """

    task_options: ClassVar[Mapping[str, Any]] = {
        "max_retries": None, "retry_backoff": 1.0, "retry_backoff_max": 600.0, "retry_jitter": True,
        "retry_for": (Exception,),
    }

    def __init__(self) -> None:
        self._rules: dict[str, RetryRules] = {}  # per task name: built once, not per failure

    def check_task_options(self, options: Mapping[str, Any]) -> None:
        rules_from(options)

    def rules(self, delivery: Delivery) -> RetryRules:
        task = delivery.task
        if task is None:
            return RetryRules()
        rules = self._rules.get(task.name)
        if rules is None:
            rules = self._rules[task.name] = rules_from(task.options.settings)
        return rules

    def decide_failure(self, delivery: Delivery) -> Retry | DeadLetter | None:
        outcome, envelope = delivery.outcome, delivery.envelope
        if outcome is None or envelope is None:
            return None
        exc = outcome.exception if outcome.exception is not None else RuntimeError(outcome.reply.exc_message)
        decision = decide(self.rules(delivery), exc, envelope.attempts)
        if decision.retry:
            return Retry(decision.countdown)
        final = outcome.reply
        if decision.cause is not None and decision.cause is not exc:
            final = failure(envelope.id, decision.cause)
        return dead_letter_failure(delivery.attempt, decision.reason, final)
