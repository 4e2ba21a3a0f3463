"""Expiry: a message that arrives after its ``expires`` time is dead-lettered, not run."""

from __future__ import annotations

from taskq.middleware.base import Middleware
from taskq.middleware.decisions import DeadLetter
from taskq.middleware.delivery import Delivery, dead_letter_reply

DETAIL = "arrived after its expiry time"


class Expiry(Middleware):
    """Running a task its sender no longer wants is worse than not running it; the caller learns why."""

    def before_run(self, delivery: Delivery) -> DeadLetter | None:
        envelope = delivery.envelope
        if envelope is None or not envelope.is_expired():
            return None
        return DeadLetter("expired", DETAIL, reply=dead_letter_reply(envelope, f"expired: {DETAIL}"))
