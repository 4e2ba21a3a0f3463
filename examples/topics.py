"""Topics: which routing keys reach which queue through ``*.orange.*``, ``*.*.rabbit`` and ``lazy.#``.

    python -m examples.topics

The seed's topic exchange: queue ``orange`` is bound with ``*.orange.*``; queue ``rabbit``
with ``*.*.rabbit`` and ``lazy.#``. ``*`` is exactly one word, ``#`` zero or more. Each key
is sent once through the exchange; a worker consuming both queues records where each
message arrived, and the table below is what the broker actually did. A key no binding
matches is returned to the sender: ``apply_async`` raises ``Unroutable`` instead of losing it.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import structlog

from examples._workers import delete_queues, running_workers, wait_for
from taskq import App, Unroutable

EXCHANGE = "examples.animals"
ORANGE, RABBIT = "examples.topics.orange", "examples.topics.rabbit"
SHORT = {ORANGE: "orange", RABBIT: "rabbit"}
DONE = "(done)"
KEYS = [
    "quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
    "lazy.pink.rabbit", "quick.brown.fox", "quick.orange.male.rabbit", "lazy.orange.male.rabbit",
]

app = App("topics", default_queue=ORANGE)
app.bind(ORANGE, EXCHANGE, "*.orange.*")
app.bind(RABBIT, EXCHANGE, "*.*.rabbit")
app.bind(RABBIT, EXCHANGE, "lazy.#")


@app.task(exchange=EXCHANGE, ignore_result=True)
def record(routing_key: str, journal: str) -> None:
    """Note which queue this copy came from: one line per delivery."""
    queue = structlog.contextvars.get_contextvars()["queue"]
    with open(journal, "a") as file:
        file.write(f"{routing_key} {queue}\n")


def arrivals(journal: Path) -> list[tuple[str, str]]:
    if not journal.exists():
        return []
    return [tuple(line.split(" ")) for line in journal.read_text().splitlines()]


def main() -> None:
    delete_queues(app, [ORANGE, RABBIT])
    journal = Path(tempfile.mkdtemp(prefix="taskq-topics-")) / "arrivals.txt"
    unroutable = set()
    with running_workers(app, "examples.topics:app", concurrency=1, queues=[ORANGE, RABBIT]):
        for key in KEYS:
            try:
                record.apply_async((key, str(journal)), routing_key=key)
            except Unroutable:
                unroutable.add(key)
        # A marker sent straight to each queue: one worker child reads each queue in order,
        # so once both markers are in, every routed copy before them has been recorded.
        for queue in (ORANGE, RABBIT):
            record.apply_async((DONE, str(journal)), queue=queue)
        wait_for(lambda: {q for k, q in arrivals(journal) if k == DONE} == {ORANGE, RABBIT},
                 what="both queues to be drained")
    delete_queues(app, [ORANGE, RABBIT])
    app.close()

    reached = defaultdict(list)
    for key, queue in arrivals(journal):
        if key != DONE:
            reached[key].append(SHORT[queue])
    print("bindings: orange <- *.orange.*   rabbit <- *.*.rabbit, lazy.#")
    print(f"{'routing key':<26} queues")
    for key in KEYS:
        if key in unroutable:
            queues = "(none: Unroutable, returned to the sender)"
        else:
            queues = ", ".join(sorted(reached[key])) or "(none)"
        print(f"{key:<26} {queues}")


if __name__ == "__main__":
    main()
