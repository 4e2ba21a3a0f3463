"""Retries: after a failed run, another attempt later (``retry.decide``) or a dead letter."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from taskq.middleware.delivery import DeadLetter, Delivery, Retry, dead_letter_failure, failure
from taskq.middleware.pipeline import Middleware
from taskq.retry import RetryRules, decide


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
