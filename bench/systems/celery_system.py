"""Celery 5, prefork pool of 2, RPC result backend; settings in ``bench/systems/celery_app.py``."""

from __future__ import annotations

from pathlib import Path

from bench.common import (
    Unavailable,
    WorkerProcesses,
    delete_exchanges,
    delete_queues,
    python_command,
    time_calls,
)

try:
    from bench.systems import celery_app
except ImportError as exc:  # celery is a `bench` extra, not a dependency
    raise Unavailable(f"celery not installed ({exc}); pip install -e '.[bench]'") from exc


class CelerySystem:
    """``noop.delay()`` for enqueue and drain, ``noop_result.delay().get()`` for RPC."""

    name = "celery"
    queue = celery_app.QUEUE

    def __init__(self) -> None:
        self.notes = [
            ("json, task_acks_late=True, worker_prefetch_multiplier=1 (channel-global "
             "prefetch 2 for the 2-process pool), confirm_publish=True, persistent, rpc:// results; "
             "worker -P prefork -c 2 --without-gossip --without-mingle --without-heartbeat, "
             "remote control and events off"),
        ]
        self.reference_enqueues = {"celery, no confirms": self._enqueue_unconfirmed}
        self._workers: WorkerProcesses | None = None
        # Declare now, every time: kombu caches "already declared" per connection in the app's
        # pool, which outlives a round whose stop() deleted the queue and exchange.
        app = celery_app.app
        with app.connection_for_write() as conn:
            app.amqp.queues[self.queue].bind(conn.default_channel).declare()

    def enqueue(self, n: int) -> None:
        delay = celery_app.noop.delay
        for _ in range(n):
            delay()

    def _enqueue_unconfirmed(self, n: int) -> None:
        """Reference: Celery's default ``.delay()``, without publisher confirms."""
        with celery_app.unconfirmed_app.producer_or_acquire() as producer:
            for _ in range(n):
                celery_app.unconfirmed_noop.apply_async(producer=producer)
            # Make sure everything reached the broker before the timer stops: one round trip.
            producer.channel.queue_declare(queue=self.queue, passive=True)

    def preload(self, n: int, first_mark: str, last_mark: str) -> None:
        # Celery has no bulk publish; a group would still send one message per task.
        delay = celery_app.noop.delay
        delay(first_mark)
        for _ in range(n - 2):
            delay()
        delay(last_mark)

    def start_workers(self, log_path: Path) -> WorkerProcesses:
        cmd = python_command(
            "-m", "celery", "-A", "bench.systems.celery_app", "worker",
            "-Q", self.queue, "-c", "2", "-P", "prefork", "--loglevel", "warning",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        )
        self._workers = WorkerProcesses([cmd], log_path)
        return self._workers

    def rpc_roundtrips(self, n: int) -> list[float]:
        delay = celery_app.noop_result.delay
        return time_calls(lambda: delay().get(timeout=10), n)

    def stop(self) -> None:
        if self._workers is not None:
            self._workers.stop()
            self._workers = None
        # The RPC backend's reply queue (named after the client's oid) must go, and the next
        # round must get a working result consumer: Celery's stopped consumer never reconnects by
        # itself, on_after_fork() makes it start afresh on the next .get().
        consumer = celery_app.app.backend.result_consumer
        try:
            consumer.stop()
        except Exception:  # noqa: BLE001 - never started if RPC didn't run
            pass
        consumer.on_after_fork()
        delete_queues([celery_app.app.backend.oid])
        celery_app.app.close()
        celery_app.unconfirmed_app.close()
        delete_queues([self.queue])
        delete_exchanges([self.queue])


def load() -> CelerySystem:
    return CelerySystem()
