"""The raw kombu worker: the fastest a Python AMQP client does the same job, the baseline row.

Run one per process (the harness starts two): ``python -m bench.raw_kombu_worker QUEUE``.

It talks to py-amqp's channel directly because that is the only way to get the settings right:
``basic_qos(0, 1, False)`` *before* ``basic_consume`` gives the consumer prefetch 1 (kombu's
``Consumer.qos()`` after consuming leaves RabbitMQ's consumer at prefetch 0, i.e. unlimited, as
``rabbitmqctl list_consumers`` shows). Each message is a JSON object ``{"mark": path-or-null}``;
the task is a no-op (plus the mark write), then the reply is published if the message asked for
one, then the message is acked: ack after run, like every other system here.
"""

from __future__ import annotations

import json
import signal
import sys

import amqp
from kombu import Connection

from bench.common import BROKER_URL, record_mark


def noop(mark: str | None = None) -> None:
    """The task: nothing, apart from the timing mark on the first/last pre-loaded message."""
    record_mark(mark)


def serve(queue: str) -> None:
    """Consume *queue* until SIGTERM, finishing (and acking) the message in hand first."""
    stopping = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_sigterm)

    # No publisher confirms on this connection: replies go to the caller's transient, exclusive
    # queue, where a confirm would promise nothing (see README).
    with Connection(BROKER_URL) as conn:
        conn.connect()
        channel: amqp.Channel = conn.channel()
        channel.basic_qos(prefetch_size=0, prefetch_count=1, a_global=False)

        def on_message(message: amqp.Message) -> None:
            body = json.loads(message.body)
            result = noop(body.get("mark"))
            reply_to = message.properties.get("reply_to")
            if reply_to:
                channel.basic_publish(
                    amqp.Message(
                        json.dumps({"result": result}),
                        content_type="application/json",
                        correlation_id=message.properties.get("correlation_id"),
                    ),
                    exchange="",
                    routing_key=reply_to,
                )
            channel.basic_ack(message.delivery_tag)

        tag = channel.basic_consume(queue=queue, callback=on_message, no_ack=False)
        while not stopping:
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                pass
            except InterruptedError:
                pass
        channel.basic_cancel(tag)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.raw_kombu_worker QUEUE", file=sys.stderr)
        return 2
    serve(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
