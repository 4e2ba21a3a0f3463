"""Revocations on the wire: where a ``revoke`` is published, what it carries, and the set of
revoked ids a worker child keeps (docs/revoke.md).

One fanout exchange per app (``taskq.revoke.<app>``) so every worker child hears every
revocation. What keeps them for the window (``settings.REVOKE_WINDOW``) differs by broker:

* RabbitMQ: a **stream** (``taskq.revoked.<app>``, ``x-max-age`` the window) bound to the
  exchange. A stream is read without being consumed away, so each child reads it from
  "now minus the window" when it connects: a restarted worker learns what was revoked
  while it was down, and N children read the same stream without competing.
* The embedded broker has no streams: each child binds an exclusive auto-delete queue of
  its own, which hears revocations made while it is connected only (the documented gap).

No click, no App: the App's ``revoke`` and the middleware (taskq/middleware/revocation.py)
both build on this.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgpack
from kombu import Exchange, Queue

from taskq import settings
from taskq.broker import Broker
from taskq.errors import InvalidTaskId

EXCHANGE_PREFIX = "taskq.revoke."
STREAM_PREFIX = "taskq.revoked."
#: Task ids starting so are a child's catch-up markers, not revocations (taskq/middleware/revocation.py).
MARKER_PREFIX = "taskq.catch-up."
#: The longest task id a revocation accepts; ids taskq makes are 36 characters (uuid4).
MAX_ID_LENGTH = 200


def revoke_exchange(app_name: str) -> Exchange:
    """Durable, so a revoke published before any worker ever ran still finds the exchange."""
    return Exchange(EXCHANGE_PREFIX + app_name, type="fanout", durable=True)


def revocation_stream(app_name: str, window: float = settings.REVOKE_WINDOW,
                      consumer_arguments: dict[str, Any] | None = None) -> Queue:
    """The app's revocations kept for ``window`` seconds (RabbitMQ only): every producer and
    child declares it identically, or RabbitMQ refuses the second declaration."""
    name = STREAM_PREFIX + app_name
    arguments = {"x-queue-type": "stream", "x-max-age": f"{int(window)}s"}
    return Queue(name, exchange=revoke_exchange(app_name), routing_key="", durable=True, queue_arguments=arguments,
                 consumer_arguments=consumer_arguments)


def stream_from(window: float, now: float | None = None) -> dict[str, Any]:
    """Consumer arguments reading the stream from ``window`` seconds ago (an AMQP timestamp)."""
    start = (time.time() if now is None else now) - window
    return {"x-stream-offset": datetime.fromtimestamp(start, timezone.utc)}


def listener_queue(app_name: str) -> Queue:
    """One child's private queue on the exchange (the embedded broker, which has no streams)."""
    name = f"taskq.revoke-listen.{app_name}.{uuid.uuid4().hex}"
    return Queue(name, exchange=revoke_exchange(app_name), routing_key="", durable=False, exclusive=True,
                 auto_delete=True)


def check_task_id(task_id: str) -> str:
    """A task id fit to revoke: non-empty, printable, no spaces, at most MAX_ID_LENGTH; else UserActionError."""
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_ID_LENGTH:
        raise InvalidTaskId(f"not a task id: {task_id!r} (1 to {MAX_ID_LENGTH} characters)")
    if not task_id.isprintable() or any(character.isspace() for character in task_id):
        raise InvalidTaskId(f"not a task id: {task_id!r} (no spaces or control characters)")
    return task_id


@dataclass(frozen=True)
class Revocation:
    """One ``revoke``: the task's id, whether to stop it if it runs, and when (epoch seconds)."""

    task_id: str
    terminate: bool = False
    revoked_at: float = 0.0

    def body(self) -> bytes:
        packed: bytes = msgpack.packb({"id": self.task_id, "terminate": self.terminate, "at": self.revoked_at})
        return packed

    @classmethod
    def decode(cls, body: bytes | str) -> Revocation:
        """Anything off the wire is hostile: a body that is not a revocation raises ValueError."""
        try:
            fields = msgpack.unpackb(body.encode() if isinstance(body, str) else body, raw=False)
            revocation = cls(check_task_id(fields["id"]), bool(fields.get("terminate", False)), float(fields["at"]))
        except Exception as exc:  # noqa: BLE001 - any malformed body is the same refusal
            raise ValueError(f"not a revocation: {type(exc).__name__}: {exc}") from None
        return revocation


def publish(broker: Broker, app_name: str, task_id: str, terminate: bool = False) -> Revocation:
    """Publish a revocation with a publisher confirm; once this returns, the broker has it.

    On RabbitMQ the stream is declared first, so a revoke sent while no worker runs is kept
    for the window; on the embedded broker only the exchange (workers running now hear it).
    """
    revocation = Revocation(check_task_id(task_id), terminate, time.time())
    keeper = revocation_stream(app_name) if broker.driver_type == "amqp" else revoke_exchange(app_name)
    broker.publish(revocation.body(), exchange=EXCHANGE_PREFIX + app_name, routing_key="", declare=[keeper])
    return revocation


class RevokedIds:
    """The revoked ids one child knows, each kept until ``window`` seconds after its revoke,
    at most ``capacity`` of them (the oldest forgotten first): memory stays bounded however
    many revokes a long-lived worker hears."""

    def __init__(self, window: float = settings.REVOKE_WINDOW, capacity: int = settings.REVOKE_CAPACITY) -> None:
        self.window = window
        self.capacity = capacity
        self._revoked: OrderedDict[str, Revocation] = OrderedDict()

    def add(self, revocation: Revocation, now: float | None = None) -> bool:
        """Remember it; False if it was revoked longer ago than the window (a stream replays whole segments)."""
        now = time.time() if now is None else now
        if revocation.revoked_at < now - self.window:
            return False
        self._revoked.pop(revocation.task_id, None)
        self._revoked[revocation.task_id] = revocation
        while len(self._revoked) > self.capacity:
            self._revoked.popitem(last=False)
        return True

    def get(self, task_id: str, now: float | None = None) -> Revocation | None:
        revocation = self._revoked.get(task_id)
        if revocation is None:
            return None
        if revocation.revoked_at < (time.time() if now is None else now) - self.window:
            del self._revoked[task_id]
            return None
        return revocation

    def __len__(self) -> int:
        return len(self._revoked)
