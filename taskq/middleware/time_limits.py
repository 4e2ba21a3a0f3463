"""Time limits: the ``soft_time_limit`` and ``time_limit`` task options, and what a hard limit
makes of the run. The enforcing is the worker's: deadlines and the backstop in taskq/worker/limits.py,
the watchdog in taskq/worker/running.py."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from taskq.errors import TimeLimitExceeded
from taskq.middleware.delivery import Delivery, Outcome, failure
from taskq.middleware.pipeline import Middleware


class TimeLimits(Middleware):
    """``time_limit``: seconds, past which the worker child is replaced and the attempt fails.
    ``soft_time_limit``: seconds, past which SoftTimeLimitExceeded is raised in the task."""

    task_options: ClassVar[Mapping[str, Any]] = {"time_limit": None, "soft_time_limit": None}

    def check_task_options(self, options: Mapping[str, Any]) -> None:
        soft, hard = options.get("soft_time_limit"), options.get("time_limit")
        for name, value in (("time_limit", hard), ("soft_time_limit", soft)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if hard and soft and soft >= hard:
            raise ValueError("soft_time_limit must be shorter than time_limit, or it never fires")

    def before_run(self, delivery: Delivery) -> None:
        if delivery.task is not None:
            settings = delivery.task.options.settings
            delivery.soft_time_limit = settings.get("soft_time_limit")
            delivery.time_limit = settings.get("time_limit")
        return None


def hard_limit_outcome(delivery: Delivery) -> Outcome:
    """The failure a run stuck past its hard time limit ends in (then retried or dead-lettered as any)."""
    task_name = delivery.task.name if delivery.task is not None else "?"
    task_id = delivery.envelope.id if delivery.envelope is not None else ""
    exc = TimeLimitExceeded(f"task {task_name} ran past its time_limit of {delivery.time_limit} s")
    reply = failure(task_id, exc)
    return Outcome(reply=reply, body=reply.body(), runtime=delivery.time_limit or 0.0, exception=exc)
