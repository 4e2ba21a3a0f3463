"""Raw kombu: the baseline every other row is divided by.

The client side is kombu's ``Producer.publish`` with publisher confirms (what ``.delay()`` in a
framework costs at the least); the worker side is ``bench/raw_kombu_worker.py``, two plain
processes with no supervisor.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from kombu import Connection, Consumer, Producer, Queue

from bench.common import BROKER_URL, WorkerProcesses, delete_queues, python_command, queue_name

QUEUE = queue_name("kombu")


class KombuSystem:
    """Publishes ``{"mark": ...}`` JSON bodies straight to the durable queue via the default
    exchange, persistent, one confirm per publish."""

    name = "kombu"
    queue = QUEUE

    def __init__(self) -> None:
        self.notes = [
            ("Producer.publish(delivery_mode=2, serializer=json) with confirm_publish=True; "
             "worker = bench/raw_kombu_worker.py x2 (py-amqp basic_qos(0,1) before basic_consume, "
             "ack after run; replies unconfirmed, to an exclusive bench.kombu.reply.* queue)"),
        ]
        self.reference_enqueues = {"kombu, no confirms": self._enqueue_unconfirmed}
        self._conn = Connection(BROKER_URL, transport_options={"confirm_publish": True})
        self._producer = Producer(self._conn.channel())
        self._producer.channel.queue_declare(queue=QUEUE, durable=True, auto_delete=False)
        self._workers: WorkerProcesses | None = None
        self._reply_queue = f"bench.kombu.reply.{uuid.uuid4().hex[:12]}"

    def _publish(self, producer: Producer, mark: str | None = None, **props: object) -> None:
        producer.publish(
            {"mark": mark},
            exchange="",
            routing_key=QUEUE,
            delivery_mode=2,
            serializer="json",
            retry=False,
            **props,
        )

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self._publish(self._producer)

    def _enqueue_unconfirmed(self, n: int) -> None:
        """Reference: the same publishes without confirms, i.e. what the network + broker allow
        when the client never waits."""
        with Connection(BROKER_URL) as conn:
            producer = Producer(conn.channel())
            for _ in range(n):
                self._publish(producer)
            # Make sure everything reached the broker before the timer stops: one round trip.
            producer.channel.queue_declare(queue=QUEUE, passive=True)

    def preload(self, n: int, first_mark: str, last_mark: str) -> None:
        with Connection(BROKER_URL) as conn:
            producer = Producer(conn.channel())
            for i in range(n):
                mark = first_mark if i == 0 else last_mark if i == n - 1 else None
                self._publish(producer, mark)
            producer.channel.queue_declare(queue=QUEUE, passive=True)

    def start_workers(self, log_path: Path) -> WorkerProcesses:
        cmd = python_command("-m", "bench.raw_kombu_worker", QUEUE)
        self._workers = WorkerProcesses([cmd, cmd], log_path)
        return self._workers

    def rpc_roundtrips(self, n: int) -> list[float]:
        """Publish with reply_to + correlation_id, then wait on our exclusive reply queue."""
        replies: dict[str, object] = {}
        channel = self._producer.channel
        reply_queue = Queue(self._reply_queue, exclusive=True, auto_delete=True, durable=False)

        def on_reply(body: object, message: object) -> None:
            replies[message.properties["correlation_id"]] = body  # type: ignore[attr-defined]

        timings: list[float] = []
        with Consumer(channel, [reply_queue], callbacks=[on_reply], no_ack=True, accept=["json"]):
            for _ in range(n):
                correlation_id = uuid.uuid4().hex
                start = time.perf_counter()
                self._publish(self._producer, reply_to=self._reply_queue, correlation_id=correlation_id)
                deadline = time.monotonic() + 10
                while correlation_id not in replies:
                    try:
                        self._conn.drain_events(timeout=max(0.01, deadline - time.monotonic()))
                    except TimeoutError:
                        raise TimeoutError("no RPC reply from the raw kombu worker within 10s") from None
                timings.append(time.perf_counter() - start)
                del replies[correlation_id]
        return timings

    def stop(self) -> None:
        if self._workers is not None:
            self._workers.stop()
            self._workers = None
        try:
            self._conn.release()
        finally:
            delete_queues([QUEUE, self._reply_queue])


def load() -> KombuSystem:
    return KombuSystem()
