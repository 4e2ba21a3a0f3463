"""Exclusive reply queue vs RabbitMQ direct reply-to, measured with raw kombu in one run.

    python bench/rpc_reply_queue.py [--n 1000] [--broker URL]

A server process consumes ``bench.rpc`` (prefetch 1, ack after reply) and answers to
``reply_to``. The caller does N sequential round trips with each reply mechanism and
prints p50/p99. taskq's results.py chose the exclusive queue; this is the evidence.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import time
import uuid

from kombu import Connection, Consumer, Producer, Queue

REQUESTS = Queue("bench.rpc", routing_key="bench.rpc", durable=False, auto_delete=True)


def serve(url: str, ready) -> None:
    with Connection(url) as connection:
        channel = connection.channel()
        channel.basic_qos(0, 1, False)
        producer = Producer(connection.channel())

        def on_message(message):
            producer.publish(
                message.body, routing_key=message.properties["reply_to"],
                correlation_id=message.properties["correlation_id"], content_type="application/x-msgpack",
                content_encoding="binary",
            )
            message.ack()

        Consumer(channel, [REQUESTS], on_message=on_message).consume()
        ready.set()
        while True:
            try:
                connection.drain_events(timeout=1)
            except socket.timeout:
                pass


def round_trips(url: str, n: int, direct: bool) -> list[float]:
    timings = []
    with Connection(url) as connection:
        channel = connection.channel()
        replies: dict[str, bytes] = {}
        if direct:
            reply_to = "amq.rabbitmq.reply-to"
            channel.basic_consume(reply_to, no_ack=True, callback=lambda m: replies.__setitem__(m.properties["correlation_id"], m.body))
            producer = Producer(channel)  # direct reply-to: publish on the consuming channel
        else:
            queue = Queue(f"bench.reply.{uuid.uuid4().hex}", exclusive=True, auto_delete=True)
            Consumer(channel, [queue], no_ack=True, on_message=lambda m: replies.__setitem__(m.properties["correlation_id"], m.body)).consume()
            reply_to = queue.name
            producer = Producer(connection.channel())
        for _ in range(n):
            correlation_id = uuid.uuid4().hex
            started = time.perf_counter()
            producer.publish(b"x", routing_key=REQUESTS.name, reply_to=reply_to, correlation_id=correlation_id,
                             content_type="application/x-msgpack", content_encoding="binary")
            while correlation_id not in replies:
                connection.drain_events(timeout=5)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    ready = multiprocessing.Event()
    with Connection(args.broker) as connection:
        REQUESTS(connection.channel()).declare()
    server = multiprocessing.Process(target=serve, args=(args.broker, ready), daemon=True)
    server.start()
    ready.wait(10)
    try:
        print(f"{'reply mechanism':<28}{'p50 ms':>8}{'p99 ms':>8}   ({args.n} sequential round trips)")
        for label, direct in (("exclusive reply queue", False), ("direct reply-to", True)):
            round_trips(args.broker, 50, direct)  # warm up
            t = sorted(round_trips(args.broker, args.n, direct))
            print(f"{label:<28}{statistics.median(t):>8.3f}{t[int(len(t) * 0.99) - 1]:>8.3f}")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
