"""The envelope of a task and of its reply: what goes on the wire and how it is checked.

One task is one AMQP message. The body is msgpack (never pickle, so a message can't run
code when decoded, and producers in other languages can speak to us); routing facts that
a broker or an operator may want to read without decoding the body (task name, id,
attempt) travel in headers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from taskq.errors import EncodeError

CONTENT_TYPE = "application/x-msgpack"
CONTENT_ENCODING = "binary"


class InvalidMessage(Exception):
    """A received message that can't be run; ``reason`` is a short code for the dead-letter header."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def pack(value: Any) -> bytes:
    """msgpack-encode, turning msgpack's own errors into an EncodeError the caller understands."""
    try:
        return msgpack.packb(value, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode as msgpack: {exc}") from exc


def unpack(data: bytes) -> Any:
    # strict_map_key=False: kwargs keys are strings anyway, but a result dict may have int keys.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass(frozen=True)
class TaskMessage:
    """One request to run a task, as both producer and worker see it."""

    id: str
    task: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    reply_to: str | None = None
    expires_at: float | None = None  # wall-clock epoch seconds; None never expires
    attempts: int = 0  # how many times this task already ran and failed
    eta: float | None = None  # wall-clock epoch seconds before which it must not run; None: now

    def body(self) -> bytes:
        return pack({"args": list(self.args), "kwargs": self.kwargs})

    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = {"task": self.task, "id": self.id, "attempts": self.attempts}
        if self.expires_at is not None:
            headers["expires_at"] = float(self.expires_at)
        if self.eta is not None:
            headers["eta"] = float(self.eta)
        return headers

    def is_expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) > self.expires_at


def decode_task(
    body: bytes, content_type: str | None, headers: dict | None, properties: dict | None
) -> TaskMessage:
    """Check and decode a received task message; raise InvalidMessage with a reason code."""
    headers = headers or {}
    properties = properties or {}
    if content_type != CONTENT_TYPE:
        raise InvalidMessage("wrong-content-type", f"expected {CONTENT_TYPE}, got {content_type!r}")
    name = headers.get("task")
    if not isinstance(name, str) or not name:
        raise InvalidMessage("missing-task-name", "no 'task' header")
    try:
        payload = unpack(body)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise InvalidMessage("undecodable-body", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidMessage("malformed-body", "body is not a map with 'args' and 'kwargs'")
    args = payload.get("args", [])
    kwargs = payload.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidMessage("malformed-body", "'args' must be a list and 'kwargs' a map")
    task_id = headers.get("id") or properties.get("message_id") or properties.get("correlation_id")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidMessage("missing-task-id", "no 'id' header")
    expires_at = headers.get("expires_at")
    attempts = headers.get("attempts", 0)
    eta = headers.get("eta")
    return TaskMessage(
        id=task_id,
        task=name,
        args=tuple(args),
        kwargs=kwargs,
        reply_to=properties.get("reply_to") or None,
        expires_at=float(expires_at) if isinstance(expires_at, (int, float)) else None,
        attempts=attempts if isinstance(attempts, int) else 0,
        eta=float(eta) if isinstance(eta, (int, float)) else None,
    )


@dataclass(frozen=True)
class Reply:
    """The outcome of one task run, sent back to the caller's reply queue."""

    task_id: str
    ok: bool
    result: Any = None
    exc_type: str = ""
    exc_message: str = ""
    traceback: str = ""

    def body(self) -> bytes:
        if self.ok:
            return pack({"ok": True, "result": self.result})
        return pack(
            {
                "ok": False,
                "exc_type": self.exc_type,
                "exc_message": self.exc_message,
                "traceback": self.traceback,
            }
        )


def decode_reply(task_id: str, body: bytes) -> Reply:
    payload = unpack(body)
    if payload.get("ok"):
        return Reply(task_id=task_id, ok=True, result=payload.get("result"))
    return Reply(
        task_id=task_id,
        ok=False,
        exc_type=str(payload.get("exc_type", "Exception")),
        exc_message=str(payload.get("exc_message", "")),
        traceback=str(payload.get("traceback", "")),
    )
