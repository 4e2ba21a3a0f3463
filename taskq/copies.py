"""The headers and properties of the messages a worker publishes in place of one it received:
a retry, a re-delay, a dead letter. Pure functions, so each rule is unit-tested.
"""

from __future__ import annotations

from typing import Any

from taskq import settings
from taskq.message import Reply, TaskMessage

# Added by RabbitMQ on dead-lettering and quorum redelivery: they describe the old
# message's trip, and would only grow (and mislead) on the copy.
BROKER_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
# What a dead letter says beyond the task's own headers; a replay removes them again.
DEAD_LETTER_HEADERS = ("reason", "detail", "original_queue", "exc_type", "exc_message", "traceback")
CARRIED_PROPERTIES = ("correlation_id", "reply_to", "message_id", "priority")
MAX_TRACEBACK = settings.DEAD_LETTER_MAX_TRACEBACK
MAX_MESSAGE = settings.DEAD_LETTER_MAX_MESSAGE


def own_headers(headers: Any) -> dict[str, Any]:
    """The message's headers without the ones the broker added.

    Headers that are not a table have nothing to copy (the dead letter's ``detail`` says what
    they were). py-amqp hands over a key that is not UTF-8 as bytes: it is kept as it came.
    """
    if not isinstance(headers, dict):
        return {}
    return {k: v for k, v in headers.items() if not (isinstance(k, str) and k.startswith(BROKER_HEADER_PREFIXES))}


def carried_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """The AMQP properties a copy keeps, so its result still reaches the caller."""
    return {key: properties[key] for key in CARRIED_PROPERTIES if properties.get(key) is not None}


def resend_headers(original: dict[str, Any] | None, message: TaskMessage) -> dict[str, Any]:
    """Headers for a retry or re-delay: the original's (other producers' extras kept), updated."""
    headers = own_headers(original)
    for key in ("eta", "expires_at"):
        headers.pop(key, None)
    headers.update(message.headers())
    return headers


def dead_letter_headers(
    original: dict[str, Any] | None,
    *,
    reason: str,
    detail: str,
    queue: str,
    attempts: int | None = None,
    failure: Reply | None = None,
) -> dict[str, Any]:
    """Headers that let an operator see why a message is in ``<queue>.dead`` without decoding it."""
    headers = own_headers(original)
    headers.update({"reason": reason, "detail": detail[:MAX_MESSAGE], "original_queue": queue})
    if attempts is not None:
        headers["attempts"] = attempts
    if failure is not None and not failure.ok:
        headers.update(
            {
                "exc_type": failure.exc_type,
                "exc_message": failure.exc_message[:MAX_MESSAGE],
                "traceback": failure.traceback[-MAX_TRACEBACK:],
            }
        )
    return headers


def replay_headers(dead: dict[str, Any] | None) -> dict[str, Any]:
    """A dead letter's headers for its replay: a fresh start, attempts back to 0."""
    headers = {k: v for k, v in own_headers(dead).items() if k not in DEAD_LETTER_HEADERS and k != "eta"}
    headers["attempts"] = 0
    return headers
