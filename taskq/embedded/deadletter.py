"""Message TTL and dead-lettering, done the way RabbitMQ does them.

taskq's delays are a cascade of queues nobody consumes: a message waits out a queue's
``x-message-ttl`` and is dead-lettered into the next level. So expiry cannot wait for a
consumer of the queue: every connected process runs ``move_due`` from its drain loop
(and after publishing, rejecting and requeueing), and sleeps no longer than until the
next message anywhere is due (``next_due``); whoever stores a message that is due
sooner than any other rings every waiting process (``Transport.announce_due``).

A message leaves its queue when ``expires_at`` (Unix time) has passed. Messages that
died another way (rejected, over ``x-max-length``, past ``x-delivery-limit``) are marked
with ``dead_reason`` and ``expires_at = 0``, so one indexed query finds all the dead.
Moving them happens in the caller's write transaction: two processes can never both
move the same message.

Where this differs from RabbitMQ, on purpose: an expired message's copy counts its next
queue's TTL from the moment it was due, not from when a pass got round to it, so passes
that run a few ms late (a busy machine) do not add up along the 32 levels of a delay.
A pure publisher that never drains moves messages only when it publishes past a due time
it knows of (or a second after it last looked); with nobody draining at all, nothing
expires until some process drains, publishes or declares a queue.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, NamedTuple

from taskq.embedded.routing import expires_at, targets_sql

#: How many messages one transaction moves; the caller loops while more are due.
BATCH = 500

_NEXT_DUE = (
    "SELECT expires_at FROM messages WHERE expires_at IS NOT NULL AND owner_pid IS NULL ORDER BY expires_at LIMIT 1"
)
_DUE = (
    "SELECT id, queue, payload, dead_reason, expires_at FROM messages"
    " WHERE expires_at <= ? AND owner_pid IS NULL ORDER BY expires_at, id LIMIT ?"
)


class Moved(NamedTuple):
    """What a pass did: queues that got messages (to wake their consumers), the soonest
    ``expires_at`` among the copies it stored (None: none can expire), and whether a
    full batch suggests more are due."""

    queues: set[str]
    soonest_new_due: float | None
    more: bool


def next_due(db: sqlite3.Connection) -> float | None:
    row = db.execute(_NEXT_DUE).fetchone()
    return None if row is None else row[0]


def move_due(db: sqlite3.Connection, now: float) -> Moved:
    """Remove due messages and dead-letter each where its queue says; inside a transaction."""
    rows = db.execute(_DUE, (now, BATCH)).fetchall()
    if not rows:
        return Moved(set(), None, False)
    db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(rows))})", [row[0] for row in rows])
    settings: dict[str, tuple[str | None, str | None] | None] = {}  # (exchange, routing key)
    exchange_types: dict[str, str | None] = {"": ""}
    reached: set[str] = set()
    soonest: float | None = None
    for _, queue, payload, dead_reason, due in rows:
        if queue not in settings:
            settings[queue] = db.execute(
                "SELECT dead_letter_exchange, dead_letter_routing_key FROM queues WHERE name = ?", (queue,)
            ).fetchone()
        setting = settings[queue]
        exchange, routing_key = setting if setting is not None else (None, None)
        if exchange is None:
            continue  # no dead-letter exchange: dropped, as RabbitMQ drops it
        if exchange not in exchange_types:
            row = db.execute("SELECT type FROM exchanges WHERE name = ?", (exchange,)).fetchone()
            exchange_types[exchange] = row[0] if row else None
        if exchange_types[exchange] is None:
            continue  # the dead-letter exchange does not exist: dropped too
        try:
            message = json.loads(payload)
        except ValueError:  # never stored by this transport: dropping it beats wedging every drain loop
            continue
        # An expired copy's next TTL counts from when it was due, not from when a pass got
        # to it: otherwise each level of the delay cascade would add its pass's lateness.
        since = due if dead_reason is None else now
        for target, next_due in _republish(db, message, queue, dead_reason or "expired", exchange, routing_key, since):
            reached.add(target)
            if next_due is not None and (soonest is None or next_due < soonest):
                soonest = next_due
    return Moved(reached, soonest, len(rows) == BATCH)


def _republish(
    db: sqlite3.Connection,
    message: dict[str, Any],
    queue: str,
    reason: str,
    exchange: str,
    dead_letter_routing_key: str | None,
    since: float,
) -> list[tuple[str, float | None]]:
    properties = message.setdefault("properties", {})
    delivery_info = properties.setdefault("delivery_info", {})
    original_key = delivery_info.get("routing_key") or ""
    routing_key = original_key if dead_letter_routing_key is None else dead_letter_routing_key
    deaths = record_death(message, queue, reason, since)
    # RabbitMQ drops the per-message TTL from the copy, or it would expire again at once.
    properties.pop("expiration", None)
    delivery_info.update(exchange=exchange, routing_key=routing_key)
    message.pop("redelivered", None)
    targets = db.execute(targets_sql(exchange), {"exchange": exchange, "key": routing_key}).fetchall()
    payload = json.dumps(message)
    priority = properties.get("priority") or 0
    priority = priority if isinstance(priority, int) else 0
    stored = []
    for target, max_priority, message_ttl, max_length in targets:
        if reason != "rejected" and is_cycle(target, deaths):
            continue  # RabbitMQ drops a message going round a loop no client rejected it in
        due = expires_at(since, message_ttl, None)
        db.execute(
            "INSERT INTO messages (queue, priority, payload, expires_at, counted) VALUES (?, ?, ?, ?, ?)",
            (target, min(max(priority, 0), max_priority), payload, due, None if max_length is None else 1),
        )
        stored.append((target, due))
    return stored


def record_death(message: dict[str, Any], queue: str, reason: str, now: float) -> list[dict[str, Any]]:
    """Add this death to the ``x-death`` header, as RabbitMQ does; return the list.

    One entry per (queue, reason), newest first; a repeat counts up and moves to the front.
    """
    headers = message.get("headers")
    if not isinstance(headers, dict):
        headers = message["headers"] = {}
    properties = message["properties"]
    delivery_info = properties.get("delivery_info", {})
    deaths = [entry for entry in headers.get("x-death") or [] if isinstance(entry, dict)]
    for index, entry in enumerate(deaths):
        if entry.get("queue") == queue and entry.get("reason") == reason:
            entry = deaths.pop(index)
            entry["count"] = int(entry.get("count", 1)) + 1
            entry["time"] = int(now)
            break
    else:
        entry = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": int(now),
            "exchange": delivery_info.get("exchange") or "",
            "routing-keys": [delivery_info.get("routing_key") or ""],
        }
        if properties.get("expiration") is not None:
            entry["original-expiration"] = properties["expiration"]
    deaths.insert(0, entry)
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-exchange", entry["exchange"])
    headers["x-last-death-queue"] = queue
    headers["x-last-death-reason"] = reason
    headers["x-last-death-exchange"] = entry["exchange"]
    return deaths


def is_cycle(target: str, deaths: list[dict[str, Any]]) -> bool:
    """RabbitMQ's rule: the target is already in ``x-death`` and no death since (that one
    included) was a reject, so nothing but the broker keeps the message going round."""
    for entry in deaths:
        if entry.get("reason") == "rejected":
            return False
        if entry.get("queue") == target:
            return True
    return False


def now() -> float:
    """Wall-clock time: deadlines are compared across processes, so not monotonic."""
    return time.time()
