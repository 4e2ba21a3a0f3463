"""Routing (a direct exchange): errors to a file, every line to the screen.

    python -m examples.routing

The exchange ``examples.severity`` is a direct exchange: a message goes to the queues
bound with exactly its routing key, here the line's severity. Queue ``screen`` is bound
with ``info``, ``warning`` and ``error``: it prints everything. Queue ``errors`` is bound
with ``error`` only: it appends to a file. An ``error`` line matches both bindings, so it
is queued twice and handled once by each. A ``debug`` line matches no binding: the broker
returns it and ``apply_async`` raises ``Unroutable``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import structlog

from examples._workers import delete_queues, running_workers, wait_for
from taskq import App, Unroutable

EXCHANGE = "examples.severity"
SCREEN, ERRORS = "examples.routing.screen", "examples.routing.errors"
DONE = "(done)"
LINES = [
    ("info", "user 7 logged in"),
    ("warning", "disk 81% full"),
    ("error", "payment gateway timed out"),
    ("info", "order 42 shipped"),
    ("error", "cannot reach the mail server"),
    ("debug", "cache hit ratio 0.93"),
]

app = App("routing", default_queue=SCREEN)
for severity in ("info", "warning", "error"):
    app.bind(SCREEN, EXCHANGE, severity, exchange_type="direct")
app.bind(ERRORS, EXCHANGE, "error", exchange_type="direct")


@app.task(exchange=EXCHANGE, ignore_result=True)
def log_line(severity: str, text: str, error_file: str) -> None:
    queue = structlog.contextvars.get_contextvars()["queue"]
    if text == DONE:
        Path(f"{error_file}.{queue}.done").touch()
    elif queue == ERRORS:
        with open(error_file, "a") as file:
            file.write(f"{severity}: {text}\n")
            file.flush()
            os.fsync(file.fileno())
    else:
        # One write per line: the worker's children and the sender share this stdout.
        print(f"[screen] {severity}: {text}\n", end="", flush=True)


def main() -> None:
    delete_queues(app, [SCREEN, ERRORS])
    error_file = Path(tempfile.mkdtemp(prefix="taskq-routing-")) / "errors.log"
    with running_workers(app, "examples.routing:app", concurrency=1, queues=[SCREEN, ERRORS]):
        for severity, text in LINES:
            try:
                log_line.apply_async((severity, text, str(error_file)), routing_key=severity)
            except Unroutable:
                print(f"[sender] {severity}: {text!r} matched no binding (Unroutable)\n", end="", flush=True)
        # Markers straight to each queue: when both are handled, every line before them was.
        for queue in (SCREEN, ERRORS):
            log_line.apply_async(("done", DONE, str(error_file)), queue=queue)
        wait_for(lambda: all(Path(f"{error_file}.{queue}.done").exists() for queue in (SCREEN, ERRORS)),
                 what="both queues to drain")
    delete_queues(app, [SCREEN, ERRORS])
    app.close()
    print(f"[file] {error_file} holds:")
    for line in error_file.read_text().splitlines():
        print(f"[file] {line}")


if __name__ == "__main__":
    main()
