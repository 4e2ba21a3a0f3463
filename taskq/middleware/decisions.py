"""What a hook may decide becomes of a message; the worker's one settler carries it out.

Hooks return one of these instead of publishing or acking themselves, so "publish with
confirm, then ack" lives in one place (taskq/worker/settle.py) whatever a middleware does.
Returning None from a decision hook means "no opinion: carry on" (for ``before_run``: run it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from taskq.message import Reply


@dataclass(frozen=True)
class Succeeded:
    """The run's result: reply (if a caller waits), then ack."""


@dataclass(frozen=True)
class Skip:
    """Ack and drop without running or replying (say, a revoked task)."""

    reason: str = ""


@dataclass(frozen=True)
class Redelay:
    """Send the message again unchanged, to arrive at its eta: one more trip through the delay cascade."""


@dataclass(frozen=True)
class Retry:
    """Send it again as the next attempt, ``countdown`` seconds from now (0 without the broker's delays)."""

    countdown: float = 0.0


@dataclass(frozen=True)
class DeadLetter:
    """Park it in ``<queue>.dead`` with a reason; tell a waiting caller ``reply`` first, if given.

    ``attempts`` and ``failure`` describe a run that failed; ``headers`` is filled in by the
    settler (the dead letter's headers), for the ``on_settled`` hooks.
    """

    reason: str
    detail: str
    reply: Reply | None = None
    attempts: int | None = None
    failure: Reply | None = None
    headers: dict[str, Any] | None = None


Decision = Union[Succeeded, Skip, Redelay, Retry, DeadLetter]


def dead_letter_failure(attempt: int, reason: str, final: Reply) -> DeadLetter:
    """A run that failed for good: the caller gets ``final``, the dead letter says why."""
    return DeadLetter(reason, f"{final.exc_type}: {final.exc_message}", reply=final, attempts=attempt, failure=final)
