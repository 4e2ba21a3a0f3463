"""The broker database's tables, and bringing an older file up to date.

Every process runs ``create_or_upgrade`` when it opens a file whose ``user_version`` is
not ``SCHEMA_VERSION``; CREATE ... IF NOT EXISTS and ``ADDED_COLUMNS`` make that safe to
run on a new file, a version-1 file, or one another process just upgraded.
"""

from __future__ import annotations

import sqlite3
from typing import Any

#: Stored as PRAGMA user_version; bump it when the tables change shape. CREATE ... IF NOT
#: EXISTS adds missing tables and ``ADDED_COLUMNS`` the columns a version-1 file lacks.
SCHEMA_VERSION = 2
#: "tskq" in the SQLite header (offset 68): this file is a taskq broker (see brokerfile.py).
APPLICATION_ID = 0x74736B71

SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    name        TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    durable     INTEGER NOT NULL,
    auto_delete INTEGER NOT NULL,
    arguments   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queues (
    name             TEXT PRIMARY KEY,
    durable          INTEGER NOT NULL,
    auto_delete      INTEGER NOT NULL,
    max_priority     INTEGER NOT NULL,
    arguments        TEXT NOT NULL,
    had_consumer     INTEGER NOT NULL DEFAULT 0,
    -- set only for exclusive queues: the connection that may use it, and dies with it
    owner_pid        INTEGER,
    owner_start      INTEGER,
    owner_connection INTEGER,
    -- the queue arguments the broker acts on, copied out of ``arguments`` at declare
    message_ttl             INTEGER,
    max_length              INTEGER,
    overflow                TEXT,
    dead_letter_exchange    TEXT,
    dead_letter_routing_key TEXT,
    delivery_limit          INTEGER,
    ready                   INTEGER NOT NULL DEFAULT 0  -- kept only if max_length is set
);
CREATE INDEX IF NOT EXISTS queues_exclusive
    ON queues (owner_pid, owner_start) WHERE owner_pid IS NOT NULL;
CREATE TABLE IF NOT EXISTS bindings (
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    queue       TEXT NOT NULL,
    PRIMARY KEY (exchange, routing_key, queue)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bindings_by_queue ON bindings (queue);
CREATE TABLE IF NOT EXISTS exchange_bindings (
    source      TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    destination TEXT NOT NULL,
    PRIMARY KEY (source, routing_key, destination)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exchange_bindings_by_destination ON exchange_bindings (destination);
CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY,
    queue         TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    payload       TEXT NOT NULL,
    redelivered   INTEGER NOT NULL DEFAULT 0,  -- how often it was handed back
    -- set while a consumer holds the message unacked
    owner_pid     INTEGER,
    owner_start   INTEGER,
    owner_channel INTEGER,
    -- Unix time at which it leaves the queue. 0 with dead_reason set: it is already
    -- dead (rejected, over max-length, past the delivery limit) and waits to be moved
    expires_at    REAL,
    dead_reason   TEXT,
    counted       INTEGER  -- 1: its queue has x-max-length and counts it in queues.ready
);
CREATE INDEX IF NOT EXISTS messages_ready
    ON messages (queue, priority DESC, id) WHERE owner_pid IS NULL;
CREATE INDEX IF NOT EXISTS messages_reserved
    ON messages (owner_pid, owner_start, owner_channel) WHERE owner_pid IS NOT NULL;
CREATE TABLE IF NOT EXISTS consumers (
    queue        TEXT NOT NULL,
    tag          TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    start        INTEGER NOT NULL,
    channel      INTEGER NOT NULL,
    wake_address TEXT,
    PRIMARY KEY (pid, start, channel, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS consumers_by_queue ON consumers (queue);
INSERT OR IGNORE INTO exchanges VALUES
    ('amq.direct', 'direct', 1, 0, '{}'),
    ('amq.fanout', 'fanout', 1, 0, '{}'),
    ('amq.topic', 'topic', 1, 0, '{}');
"""

#: What a version-1 file lacks: (table, column, type, value copied from the arguments).
ADDED_COLUMNS = [
    ("queues", "message_ttl", "INTEGER", "x-message-ttl"),
    ("queues", "max_length", "INTEGER", "x-max-length"),
    ("queues", "overflow", "TEXT", "x-overflow"),
    ("queues", "dead_letter_exchange", "TEXT", "x-dead-letter-exchange"),
    ("queues", "dead_letter_routing_key", "TEXT", "x-dead-letter-routing-key"),
    ("queues", "delivery_limit", "INTEGER", "x-delivery-limit"),
    ("queues", "ready", "INTEGER NOT NULL DEFAULT 0", None),
    ("messages", "expires_at", "REAL", None),
    ("messages", "dead_reason", "TEXT", None),
    ("messages", "counted", "INTEGER", None),
]

#: Run after the columns exist. Only rows that can expire are in the index, so a queue
#: without TTL pays nothing and "what is due next" is one index probe.
SCHEMA_AFTER_COLUMNS = [
    "CREATE INDEX IF NOT EXISTS messages_expiring ON messages (expires_at)"
    " WHERE expires_at IS NOT NULL AND owner_pid IS NULL",
    # An early development version of these triggers counted rows on every insert.
    "DROP TRIGGER IF EXISTS messages_max_length",
    "DROP TRIGGER IF EXISTS messages_reject_publish",
    # x-max-length needs the number of ready messages at every publish. count(*) would
    # read the whole queue each time (27 ms a publish at 10,000 deep), so queues with a
    # limit keep ``queues.ready`` up to date instead, through these triggers; their rows
    # carry ``counted = 1`` so every other queue's messages skip the triggers at no cost.
    # ("Ready" here: not reserved and not marked dead.)
    """CREATE TRIGGER IF NOT EXISTS messages_counted_delete AFTER DELETE ON messages
    WHEN OLD.counted AND OLD.owner_pid IS NULL AND OLD.dead_reason IS NULL
    BEGIN
        UPDATE queues SET ready = ready - 1 WHERE name = OLD.queue;
    END""",
    """CREATE TRIGGER IF NOT EXISTS messages_counted_update AFTER UPDATE OF owner_pid, dead_reason ON messages
    WHEN NEW.counted
        AND (OLD.owner_pid IS NULL AND OLD.dead_reason IS NULL) != (NEW.owner_pid IS NULL AND NEW.dead_reason IS NULL)
    BEGIN
        UPDATE queues SET ready = ready + CASE WHEN NEW.owner_pid IS NULL AND NEW.dead_reason IS NULL
            THEN 1 ELSE -1 END WHERE name = NEW.queue;
    END""",
    # x-overflow reject-publish: a full queue skips the row (RAISE(IGNORE) skips only
    # this row of a multi-queue INSERT) and taskq_refused() tells the publisher.
    """CREATE TRIGGER IF NOT EXISTS messages_counted_refuse BEFORE INSERT ON messages
    WHEN NEW.counted
        AND (SELECT overflow LIKE 'reject-publish%' AND ready >= max_length FROM queues WHERE name = NEW.queue)
    BEGIN
        SELECT taskq_refused(NEW.queue);
        SELECT RAISE(IGNORE);
    END""",
    # x-overflow drop-head (the default), inside the publishing statement: the surplus at
    # the head goes at once. Without a dead-letter exchange it is deleted; with one it is
    # marked dead (never delivered, not counted) and the expiry pass, which
    # taskq_dead_pending() asks for, dead-letters it with reason "maxlen".
    """CREATE TRIGGER IF NOT EXISTS messages_counted_insert AFTER INSERT ON messages
    WHEN NEW.counted
    BEGIN
        UPDATE queues SET ready = ready + 1 WHERE name = NEW.queue;
        DELETE FROM messages WHERE id IN (
            SELECT id FROM messages
            WHERE queue = NEW.queue AND owner_pid IS NULL AND dead_reason IS NULL
            ORDER BY priority DESC, id
            LIMIT coalesce((SELECT max(0, ready - max_length) FROM queues
                            WHERE name = NEW.queue AND dead_letter_exchange IS NULL), 0));
        SELECT taskq_dead_pending() FROM queues
        WHERE name = NEW.queue AND dead_letter_exchange IS NOT NULL AND ready > max_length;
        UPDATE messages SET dead_reason = 'maxlen', expires_at = 0 WHERE id IN (
            SELECT id FROM messages
            WHERE queue = NEW.queue AND owner_pid IS NULL AND dead_reason IS NULL
            ORDER BY priority DESC, id
            LIMIT coalesce((SELECT max(0, ready - max_length) FROM queues
                            WHERE name = NEW.queue AND dead_letter_exchange IS NOT NULL), 0));
    END""",
]

#: Queues with a limit that a version-1 file already had: count what they hold.
_BACKFILL_COUNTS = [
    "UPDATE messages SET counted = 1 WHERE counted IS NULL"
    " AND queue IN (SELECT name FROM queues WHERE max_length IS NOT NULL)",
    "UPDATE queues SET ready = (SELECT count(*) FROM messages m WHERE m.queue = queues.name"
    " AND m.owner_pid IS NULL AND m.dead_reason IS NULL) WHERE max_length IS NOT NULL",
]


def create_or_upgrade(db: sqlite3.Connection) -> None:
    """Inside the caller's write transaction."""
    # statement by statement: executescript() would commit the caller's BEGIN first
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    _add_missing_columns(db)
    for statement in [*_BACKFILL_COUNTS, *SCHEMA_AFTER_COLUMNS]:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def queue_settings(
    arguments: dict[str, Any],
) -> tuple[int | None, int | None, str | None, str | None, str | None, int | None]:
    """The columns ``ADDED_COLUMNS`` copies out of the queue arguments, in that order.

    x-queue-type, x-dead-letter-strategy and the like are stored but not acted on.
    """

    def number(key: str) -> int | None:
        value = arguments.get(key)
        return None if value is None else int(value)

    def text(key: str) -> str | None:
        value = arguments.get(key)
        return None if value is None else str(value)

    return (
        number("x-message-ttl"),
        number("x-max-length"),
        text("x-overflow"),
        text("x-dead-letter-exchange"),
        text("x-dead-letter-routing-key"),
        number("x-delivery-limit"),
    )


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a version-1 file up to date, filling the new queue columns from the arguments."""
    for table, column, kind, argument in ADDED_COLUMNS:
        existing = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column in existing:
            continue
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if argument is not None:
            db.execute(f"UPDATE {table} SET {column} = json_extract(arguments, ?)", (f'$."{argument}"',))
