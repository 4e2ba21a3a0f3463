"""Expiry: a message that arrives after its ``expires`` time is dead-lettered, not run."""

from __future__ import annotations

from taskq.middleware.delivery import DeadLetter, Delivery, dead_letter_reply
from taskq.middleware.pipeline import Middleware

DETAIL = "arrived after its expiry time"


class Expiry(Middleware):
    """Running a task its sender no longer wants is worse than not running it; the caller learns why."""

    def before_run(self, delivery: Delivery) -> DeadLetter | None:
        envelope = delivery.envelope
        if envelope is None or not envelope.is_expired():
            return None
        return DeadLetter("expired", DETAIL, reply=dead_letter_reply(envelope, f"expired: {DETAIL}"))
