"""The envelope of a task and of its reply: what goes on the wire and how it is checked.

One task is one AMQP message. The body is msgpack (never pickle, so a message can't run
code when decoded, and producers in other languages can speak to us); routing facts that
a broker or an operator may want to read without decoding the body (task name, id,
attempt) travel in headers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from taskq.errors import EncodeError, InvalidMessage

CONTENT_TYPE = "application/x-msgpack"
CONTENT_ENCODING = "binary"
# attempts + 1 (the retry's copy) must still fit the signed 32-bit integer any AMQP client
# reads; a larger count comes from no retry policy, only from a hostile or broken producer.
MAX_ATTEMPTS = 2**31 - 2
# The id is also the reply's correlation_id, an AMQP short string: at most 255 UTF-8 bytes.
MAX_ID_BYTES = 255


def pack(value: Any) -> bytes:
    """msgpack-encode, turning msgpack's own errors into an EncodeError the caller understands."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True, datetime=False)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode as msgpack: {exc}") from exc


def message_body(body: Any) -> bytes:
    """A received body as bytes: py-amqp (and kombu's virtual transports) hand over an
    empty body as the str ``''``, which can't be published again with the ``binary`` encoding."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if body is None:
        return b""
    raise TypeError(f"a message body must be bytes or str, not {type(body).__name__}")


def unpack(data: bytes) -> Any:
    # strict_map_key=False: kwargs keys are strings anyway, but a result dict may have int keys.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass(frozen=True)
class TaskMessage:
    """One request to run a task, as both producer and worker see it."""

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    expires_at: float | None = None  # wall-clock epoch seconds; None never expires
    attempts: int = 0  # how many times this task already ran and failed
    eta: float | None = None  # wall-clock epoch seconds before which it must not run; None: now
    #: What comes after this task in a chain, group or chord (taskq/continuation.py), or None.
    workflow: dict[str, Any] | None = None
    #: The id the reply is matched by, if not this task's own: a chain's steps reply as the chain.
    correlation_id: str | None = None

    @property
    def reply_id(self) -> str:
        return self.correlation_id or self.id

    def body(self) -> bytes:
        if self.workflow is None:
            return pack({"args": list(self.args), "kwargs": self.kwargs})
        return pack({"args": list(self.args), "kwargs": self.kwargs, "workflow": self.workflow})

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
    body: bytes, content_type: str | None, headers: Any, properties: dict[str, Any] | None
) -> TaskMessage:
    """Check and decode a received task message; raise InvalidMessage with a reason code.

    Everything off the wire is hostile until checked: a header of the wrong type or out of
    range is refused here (``invalid-header``) rather than run with a guessed value, or
    carried into a retry copy the broker or py-amqp then can't encode.
    """
    if headers is None:
        headers = {}
    if not isinstance(headers, dict):
        raise InvalidMessage("invalid-header", f"the headers are a {type(headers).__name__}, not a table")
    properties = properties or {}
    if content_type != CONTENT_TYPE:
        raise InvalidMessage("wrong-content-type", f"expected {CONTENT_TYPE}, got {content_type!r}")
    name = headers.get("task")
    if name is None or name == "":
        raise InvalidMessage("missing-task-name", "no 'task' header")
    if not isinstance(name, str):
        raise InvalidMessage("invalid-header", f"'task' must be a string, not {type(name).__name__}")
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
    if not all(isinstance(key, str) for key in kwargs):
        raise InvalidMessage("malformed-body", "the keys of 'kwargs' must be strings")
    workflow = payload.get("workflow")
    if workflow is not None and not isinstance(workflow, dict):
        raise InvalidMessage("malformed-body", "'workflow' must be a map")
    reply_to = properties.get("reply_to") or None
    if reply_to is not None and not isinstance(reply_to, str):
        raise InvalidMessage("invalid-header", f"the reply_to property must be a string, not {type(reply_to).__name__}")
    correlation_id = properties.get("correlation_id") or None
    if correlation_id is not None and not isinstance(correlation_id, str):
        raise InvalidMessage("invalid-header", "the correlation_id property must be a string")
    return TaskMessage(
        id=task_id(headers, properties),
        task=name,
        args=tuple(args),
        kwargs=kwargs,
        reply_to=reply_to,
        expires_at=epoch_seconds(headers, "expires_at"),
        attempts=attempt_count(headers),
        eta=epoch_seconds(headers, "eta"),
        workflow=workflow,
        correlation_id=correlation_id,
    )


def task_id(headers: dict[str, Any], properties: dict[str, Any]) -> str:
    """The ``id`` header, else the ``message_id`` or ``correlation_id`` property (other producers')."""
    value = headers.get("id") or properties.get("message_id") or properties.get("correlation_id")
    if value is None or value == "":
        raise InvalidMessage("missing-task-id", "no 'id' header")
    if not isinstance(value, str):
        raise InvalidMessage("invalid-header", f"'id' must be a string, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMessage("invalid-header", "'id' is not valid UTF-8") from None
    if size > MAX_ID_BYTES:
        raise InvalidMessage("invalid-header", f"'id' is {size} bytes long, more than {MAX_ID_BYTES}")
    return value


def attempt_count(headers: dict[str, Any]) -> int:
    value = headers.get("attempts", 0)
    if value is None:
        return 0
    # bool is an int in Python, and True attempts is no count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidMessage("invalid-header", f"'attempts' must be an integer, not {type(value).__name__}")
    if not 0 <= value <= MAX_ATTEMPTS:
        raise InvalidMessage("invalid-header", f"'attempts' must be 0..{MAX_ATTEMPTS}, got {value}")
    return value


def epoch_seconds(headers: dict[str, Any], key: str) -> float | None:
    """An optional time header (``eta``, ``expires_at``): a finite number, or absent."""
    value = headers.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidMessage("invalid-header", f"{key!r} must be epoch seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        raise InvalidMessage("invalid-header", f"{key!r} is out of range: {value}") from None
    if not math.isfinite(seconds):
        raise InvalidMessage("invalid-header", f"{key!r} must be a finite number, got {value}")
    return seconds


@dataclass(frozen=True)
class Reply:
    """The outcome of one task run, sent back to the caller's reply queue."""

    task_id: str
    ok: bool
    result: Any = None
    exc_type: str = ""
    exc_message: str = ""
    traceback: str = ""
    #: The workflow step that failed: ``{"index": 1, "task": "shop.charge"}`` (chains, chords).
    step: dict[str, Any] | None = None

    def body(self) -> bytes:
        if self.ok:
            return pack({"ok": True, "result": self.result})
        failed: dict[str, Any] = {
            "ok": False,
            "exc_type": self.exc_type,
            "exc_message": self.exc_message,
            "traceback": self.traceback,
        }
        if self.step is not None:
            failed["step"] = self.step
        return pack(failed)


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
        step=payload["step"] if isinstance(payload.get("step"), dict) else None,
    )
