"""Publish/subscribe (a fanout): every worker's log lines to a file and to the screen at once.

    python -m examples.pubsub

Workers publish their log lines to the ``taskq.logs`` fanout exchange. Each ``taskq logs``
binds its own exclusive queue to it, so two subscribers — ``taskq logs --output FILE``
and a plain ``taskq logs`` on the screen — each receive every line; neither takes lines
from the other, and nothing is kept once they exit. Two workers run ten tasks that each log
one line; the example waits until both subscribers have all ten.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from examples._workers import delete_queues, running_workers, wait_for
from taskq import App, get_logger

QUEUE = "examples.pubsub"
TASKS = 10

app = App("pubsub", default_queue=QUEUE)


@app.task(ignore_result=True)
def handle(run: str, n: int) -> None:
    get_logger().info("handled", run=run, n=n)


class Subscriber:
    """One ``taskq logs --json`` process; collects this run's ``handled`` records."""

    def __init__(self, name: str, run: str, output: Path | None = None) -> None:
        self.name, self.run, self.output = name, run, output
        self.screen_lines: list[dict] = []
        self.ready = threading.Event()
        self.summary = ""
        command = [sys.executable, "-m", "taskq", "logs", "-A", "examples.pubsub:app", "--broker", app.broker.url,
                   "--task", handle.name, "--json"]
        if output is not None:
            command += ["--output", str(output)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.readers = [threading.Thread(target=self._read_stderr, daemon=True),
                        threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            if "listening on" in line:
                self.ready.set()  # its queue is bound to the fanout: from now on it gets every line
            elif "received" in line:
                self.summary = line.strip().removeprefix("taskq logs: ")

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            record = json.loads(line)
            if record.get("run") == self.run:
                # One write per line: several processes share this stdout.
                print(f"[screen] pid {record['pid']}: {record['event']} n={record['n']}\n", end="", flush=True)
                self.screen_lines.append(record)

    def records(self) -> list[dict]:
        if self.output is None:
            return list(self.screen_lines)
        if not self.output.exists():
            return []
        # The subscriber may be mid-write: only lines it finished (ending in a newline) are records.
        finished = self.output.read_text().split("\n")[:-1]
        records = [json.loads(line) for line in finished if line.strip()]
        return [r for r in records if r.get("run") == self.run]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)  # it prints its summary and exits
        self.process.wait(30)
        for reader in self.readers:
            reader.join(10)


def main() -> None:
    run = uuid.uuid4().hex[:8]
    log_file = Path(tempfile.mkdtemp(prefix="taskq-pubsub-")) / "taskq.jsonl"
    subscribers = [Subscriber("file", run, output=log_file), Subscriber("screen", run)]
    try:
        wait_for(lambda: all(s.ready.is_set() for s in subscribers), what="both subscribers to bind")
        with running_workers(app, "examples.pubsub:app", count=2, concurrency=1, loglevel="info"):
            handle.map([(run, n) for n in range(TASKS)])
            wait_for(lambda: all(len(s.records()) >= TASKS for s in subscribers), timeout=60,
                     what=f"both subscribers to receive {TASKS} lines")
    finally:
        for subscriber in subscribers:
            subscriber.stop()
        delete_queues(app, [QUEUE])
        app.close()
    for subscriber in subscribers:
        records = subscriber.records()
        numbers = sorted(r["n"] for r in records)
        workers = {r["pid"] for r in records}
        where = f" ({log_file})" if subscriber.output else ""
        print(f"{subscriber.name} subscriber{where}: lines {numbers} from {len(workers)} workers; {subscriber.summary}")
    every = all(sorted(r["n"] for r in s.records()) == list(range(TASKS)) for s in subscribers)
    print(f"both subscribers received every line: {every}")


if __name__ == "__main__":
    main()
