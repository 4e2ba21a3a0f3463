"""The burst: 5,000 purchase attempts for 100 items, through the queue, then the outcome.

    python -m examples.flash_sale [--attempts 5000] [--stock 100] [--workers 2] [--chart FILE.png]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

from examples import flash_sale
from examples._workers import delete_queues, running_workers
from examples.flash_sale import QUEUE, app, buy


class DepthSampler(threading.Thread):
    """Reads the queue's ready-message count from the broker every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stopping = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        with app.broker.connect() as connection:
            channel = connection.channel()
            while not self.stopping.is_set():
                with contextlib.suppress(Exception):
                    _, ready, _ = channel.queue_declare(queue=QUEUE, passive=True)
                    self.samples.append((time.monotonic() - self.started_at, ready))
                self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def write_chart(samples: list[tuple[float, int]], path: Path) -> str:
    try:
        import matplotlib
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install 'taskq-rabbitmq[plot]')"
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 3.5))
    axes.plot([t for t, _ in samples], [depth for _, depth in samples])
    axes.set_xlabel("seconds since the burst began")
    axes.set_ylabel("messages ready in the queue")
    axes.set_title("flash sale: queue depth")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return f"chart of queue depth over time: {path}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", type=int, default=5000)
    parser.add_argument("--stock", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="worker child processes")
    parser.add_argument("--chart", type=Path, default=None, help="PNG file (default: in a temporary folder)")
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="taskq-flash-sale-"))
    os.environ["FLASH_SALE_DB"] = str(folder / "shop.db")  # the workers inherit it
    db = flash_sale.open_db(stock=arguments.stock)
    delete_queues(app, [QUEUE])

    with running_workers(app, "examples.flash_sale:app", concurrency=arguments.workers, queues=[QUEUE]):
        sampler = DepthSampler()
        sampler.start()
        began = time.monotonic()
        attempts = [(f"attempt-{i}", f"user-{i}") for i in range(arguments.attempts)]
        results = buy.map(attempts)  # one burst, publisher confirms pipelined
        published = time.monotonic() - began
        answers = [result.get(timeout=120) for result in results]
        drained = time.monotonic() - began
        sampler.stop()
        # A redelivery is the same message again: replay the first 200 attempts' ids.
        replayed = [result.get(timeout=60) for result in buy.map(attempts[:200])]
    delete_queues(app, [QUEUE])
    app.close()

    tally = collections.Counter(answers)
    state = flash_sale.counts(db)
    peak_at, peak = max(sampler.samples, key=lambda sample: sample[1], default=(0.0, 0))
    emptied_at = next((t for t, depth in sampler.samples if t > peak_at and depth == 0), drained)
    print(f"{arguments.attempts} attempts for {arguments.stock} items, {arguments.workers} workers")
    print(f"published in {published:.2f} s; all answered in {drained:.2f} s")
    print(f"answers: bought {tally['bought']}, sold out {tally['sold out']}, "
          f"unanswered {arguments.attempts - sum(tally.values())}")
    print(f"orders in the database: {state['orders']}; stock left: {state['stock_left']}")
    print(f"redelivered 200 attempts: same answers {replayed == answers[:200]}; orders still {flash_sale.counts(db)['orders']}")
    print(f"peak queue depth: {peak} messages at {peak_at:.1f} s; drain rate: "
          f"{peak / max(emptied_at - peak_at, 1e-3):.0f} attempts/s from the peak to empty, "
          f"{arguments.attempts / drained:.0f} attempts/s overall")
    print(write_chart(sampler.samples, arguments.chart or folder / "queue_depth.png"))


if __name__ == "__main__":
    main()
