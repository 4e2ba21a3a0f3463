"""Dramatiq with its RabbitmqBroker: 2 processes x 1 thread, prefetch 1, Redis for results."""

from __future__ import annotations

from pathlib import Path

from bench.common import (
    REDIS_URL,
    Unavailable,
    WorkerProcesses,
    delete_queues,
    python_command,
    time_calls,
    worker_env,
)

try:
    from bench.systems import dramatiq_actors
except ImportError as exc:  # dramatiq is a `bench` extra, not a dependency
    raise Unavailable(f"dramatiq not installed ({exc}); pip install -e '.[bench]'") from exc


class DramatiqSystem:
    """``noop.send()`` for enqueue and drain, ``send()`` + ``get_result(block=True)`` for RPC."""

    name = "dramatiq"
    queue = dramatiq_actors.QUEUE

    def __init__(self) -> None:
        self.notes = [
            ("RabbitmqBroker(confirm_delivery=True), persistent, durable, json (default encoder); "
             "worker --processes 2 --threads 1 with dramatiq_queue_prefetch=1; acks after the actor "
             "returns; default middleware kept (AgeLimit, TimeLimit, ShutdownNotifications, "
             "Callbacks, Pipelines, Retries)"),
            ("RPC uses the Results middleware with Redis (127.0.0.1:6379): Dramatiq has no RPC "
             "backend, so its round trip is RabbitMQ there and Redis back"),
        ]
        self.reference_enqueues: dict = {}
        self._workers: WorkerProcesses | None = None
        # Declare now, every time: the broker object outlives a round, and it remembers having
        # declared the queues that the previous round's stop() deleted.
        dramatiq_actors.broker.queues_pending.add(self.queue)
        dramatiq_actors.broker.declare_queue(self.queue, ensure=True)

    def enqueue(self, n: int) -> None:
        send = dramatiq_actors.noop.send
        for _ in range(n):
            send()

    def preload(self, n: int, first_mark: str, last_mark: str) -> None:
        send = dramatiq_actors.noop.send
        send(first_mark)
        for _ in range(n - 2):
            send()
        send(last_mark)

    def start_workers(self, log_path: Path) -> WorkerProcesses:
        # Dramatiq's consumer prefetch defaults to 2 x threads; only this variable lowers it.
        env = worker_env() | {"dramatiq_queue_prefetch": "1"}
        cmd = python_command(
            "-m", "dramatiq", "bench.systems.dramatiq_actors",
            "--processes", "2", "--threads", "1", "--queues", self.queue,
        )
        self._workers = WorkerProcesses([cmd], log_path, env=env)
        return self._workers

    def rpc_roundtrips(self, n: int) -> list[float]:
        send = dramatiq_actors.noop_result.send
        backend = dramatiq_actors.result_backend
        return time_calls(lambda: backend.get_result(send(), block=True, timeout=10_000), n)

    def stop(self) -> None:
        if self._workers is not None:
            self._workers.stop()
            self._workers = None
        dramatiq_actors.broker.close()
        # Dramatiq declares a delay queue (.DQ) and a dead-letter queue (.XQ) next to each queue.
        delete_queues([self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"])
        client = dramatiq_actors.result_backend.client
        keys = list(client.scan_iter(match=f"{dramatiq_actors.RESULTS_NAMESPACE}:*"))
        if keys:
            client.delete(*keys)


def load() -> DramatiqSystem:
    # Without Redis there is no way to get a Dramatiq result back, so no RPC column: say so.
    try:
        dramatiq_actors.result_backend.client.ping()
    except Exception as exc:  # redis-py raises several connection error types
        raise Unavailable(f"no Redis for Dramatiq's results at {REDIS_URL} ({exc})") from exc
    return DramatiqSystem()
