"""Which queues a message reaches: the SQL shared by publishing and dead-lettering.

One statement per publish whatever the fan-out. An exchange bound to another exchange
(``exchange_bind``) passes the message on with its routing key unchanged, as RabbitMQ
does; the recursive query visits each exchange at most once, so a loop of bindings ends.
A queue reached along two paths gets one copy, and a message to a queue nobody declared
is dropped, as RabbitMQ drops it.
"""

from __future__ import annotations

EXCHANGE_TYPES = frozenset(["direct", "topic", "fanout"])


_MATCHES = (
    "(r.type = 'fanout'"
    " OR (r.type = 'direct' AND b.routing_key = :key)"
    " OR (r.type = 'topic' AND taskq_topic_match(b.routing_key, :key)))"
)

#: (queue, max_priority, message_ttl, max_length) for each queue the message reaches.
_VIA_EXCHANGE = f"""
WITH RECURSIVE reached(name, type) AS (
    SELECT name, type FROM exchanges WHERE name = :exchange
    UNION
    SELECT e.name, e.type FROM reached r
    JOIN exchange_bindings b ON b.source = r.name
    JOIN exchanges e ON e.name = b.destination
    WHERE {_MATCHES}
)
SELECT DISTINCT q.name AS name, q.max_priority AS max_priority, q.message_ttl AS message_ttl,
    q.max_length AS max_length
FROM reached r JOIN bindings b ON b.exchange = r.name JOIN queues q ON q.name = b.queue
WHERE {_MATCHES}
"""
#: The default exchange: the routing key names the queue; nothing can be bound to it.
_VIA_DEFAULT = (
    "SELECT q.name AS name, q.max_priority AS max_priority, q.message_ttl AS message_ttl,"
    " q.max_length AS max_length FROM queues q WHERE q.name = :key"
)


def targets_sql(exchange: str) -> str:
    """Parameters ``:exchange`` and ``:key``."""
    return _VIA_EXCHANGE if exchange else _VIA_DEFAULT


#: Messages of a queue with x-max-length are counted (see schema.py); NULL keeps the
#: triggers off every other queue's rows.
COUNTED = "CASE WHEN t.max_length IS NOT NULL THEN 1 END"

#: The queue's x-message-ttl and the message's own expiration both apply: the sooner wins.
_EXPIRES_AT = (
    "CASE WHEN t.message_ttl IS NULL THEN :message_expires_at"
    " WHEN :message_expires_at IS NULL THEN :now + t.message_ttl / 1000.0"
    " ELSE MIN(:message_expires_at, :now + t.message_ttl / 1000.0) END"
)


def _publish_sql(targets: str) -> str:
    return (
        "INSERT INTO messages (queue, priority, payload, expires_at, counted)"
        f" SELECT t.name, MIN(MAX(:priority, 0), t.max_priority), :payload, {_EXPIRES_AT}, {COUNTED}"
        f" FROM ({targets}) t RETURNING queue, expires_at"
    )


_PUBLISH_VIA_EXCHANGE = _publish_sql(_VIA_EXCHANGE)
_PUBLISH_VIA_DEFAULT = _publish_sql(_VIA_DEFAULT)


def publish_sql(exchange: str) -> str:
    """Store one copy per target; parameters as ``targets_sql`` plus ``:priority``,
    ``:payload``, ``:now`` and ``:message_expires_at`` (None: no per-message TTL)."""
    return _PUBLISH_VIA_EXCHANGE if exchange else _PUBLISH_VIA_DEFAULT


def expires_at(now: float, queue_ttl_ms: int | None, message_ttl_ms: int | None) -> float | None:
    """The same rule as ``_EXPIRES_AT``, for copies built in Python."""
    ttls = [ttl for ttl in (queue_ttl_ms, message_ttl_ms) if ttl is not None]
    return now + min(ttls) / 1000.0 if ttls else None
