"""The flash sale: a burst of purchase attempts for a few items, smoothed by a queue.

    python -m examples.flash_sale          # the burst from the command line (a CLI front)
    python -m examples.flash_sale.front    # the HTTP front the Procfile runs

Purchases don't hit the database as they arrive: each attempt is a task on a durable queue,
and a couple of workers take them one at a time (prefetch 1). The database sees at most as
many writers as there are workers, however big the burst.

Each attempt decrements the stock with one atomic ``UPDATE ... WHERE stock > 0`` and records
its outcome under its attempt id, in the same transaction. A redelivered task (its worker
died after the commit, before the ack) finds its outcome already recorded and returns it:
no oversell, no second order.
"""

from __future__ import annotations

import os
import sqlite3

from taskq import App

QUEUE = os.environ.get("FLASH_SALE_QUEUE", "examples.flash_sale")  # the Procfile test uses its own
ITEM = "limited sneakers"

app = App("flash_sale", default_queue=QUEUE)
_connections: dict[int, sqlite3.Connection] = {}


def db_path() -> str:
    return os.environ.get("FLASH_SALE_DB", "flash_sale.db")


def open_db(path: str | None = None, stock: int | None = None) -> sqlite3.Connection:
    """Open (and create, with the stock for sale) the shop's database."""
    # check_same_thread=False: a worker child runs its tasks on a task thread, one at a time.
    db = sqlite3.connect(path or db_path(), timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript("""
        CREATE TABLE IF NOT EXISTS stock (item TEXT PRIMARY KEY, left INTEGER NOT NULL CHECK (left >= 0));
        CREATE TABLE IF NOT EXISTS attempts (id TEXT PRIMARY KEY, user TEXT, outcome TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, attempt_id TEXT UNIQUE NOT NULL, user TEXT);
    """)
    initial = stock if stock is not None else int(os.environ.get("FLASH_SALE_STOCK", "100"))
    db.execute("INSERT OR IGNORE INTO stock VALUES (?, ?)", (ITEM, initial))
    return db


def _db() -> sqlite3.Connection:
    """One connection per worker process (never one inherited across a fork)."""
    pid = os.getpid()
    if pid not in _connections:
        _connections[pid] = open_db()
    return _connections[pid]


@app.task
def buy(attempt_id: str, user: str) -> str:
    """``"bought"`` or ``"sold out"``; the same answer however often this attempt is delivered."""
    db = _db()
    db.execute("BEGIN IMMEDIATE")  # one writer at a time: the check and the update can't interleave
    try:
        row = db.execute("SELECT outcome FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        if row is not None:
            outcome = row[0]
        else:
            taken = db.execute("UPDATE stock SET left = left - 1 WHERE item = ? AND left > 0", (ITEM,)).rowcount
            outcome = "bought" if taken else "sold out"
            if taken:
                db.execute("INSERT INTO orders (attempt_id, user) VALUES (?, ?)", (attempt_id, user))
            db.execute("INSERT INTO attempts VALUES (?, ?, ?)", (attempt_id, user, outcome))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return outcome


def counts(db: sqlite3.Connection) -> dict[str, int]:
    return {
        "orders": db.execute("SELECT count(*) FROM orders").fetchone()[0],
        "stock_left": db.execute("SELECT left FROM stock WHERE item = ?", (ITEM,)).fetchone()[0],
        "attempts": db.execute("SELECT count(*) FROM attempts").fetchone()[0],
    }
