"""What a message's envelope costs the broker: the same consumer drains differently shaped messages.

    python -m bench.envelope_cost [--n 20000] [--rounds 3] [--global-qos]

The drain comparison (bench.compare) puts taskq's worker against a raw py-amqp worker, but
the two also drain different messages: the raw baseline's is ``{"mark": null}`` with no
identity at all, taskq's names its task and carries its id. This takes the worker out of
the question: two identical ack-only py-amqp consumers (prefetch 1, ack each) drain N
persistent messages of each shape from the same kind of queue, and the table shows the
drain rate and RabbitMQ's CPU per message, each as a ratio to ``bare`` in the same round.

Shapes: ``bare`` (taskq's msgpack body and content type, nothing else), ``taskq`` (what a
fire-and-forget ``.delay()`` sends: ``task``/``id``/``attempts`` headers and
``message_id``), ``taskq rpc`` (plus ``reply_to`` and ``correlation_id``, as a ``.delay()``
whose result is wanted), ``bare + 200 B`` (bare with 200 more body bytes: the same
number of bytes as the envelope, somewhere else), ``lean`` (a possible envelope: the task
name in the AMQP ``type`` property, the id in ``message_id``, no headers table).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import amqp
from kombu import Connection

from bench.common import (
    BROKER_URL,
    WorkerProcesses,
    broker_pid,
    cpu_seconds,
    delete_queues,
    python_command,
    queue_depth,
    queue_name,
)
from taskq.message import CONTENT_ENCODING, CONTENT_TYPE, TaskMessage

QUEUE = queue_name("envelope")
CONSUMERS = 2


def shapes() -> dict[str, amqp.Message]:
    """One message of each shape, built from a real TaskMessage as taskq's producer builds it."""
    task = TaskMessage(id=str(uuid.uuid4()), task="bench.systems.taskq_app.noop")
    plain = {"content_type": CONTENT_TYPE, "content_encoding": CONTENT_ENCODING, "delivery_mode": 2}
    identity = {"application_headers": task.headers(), "message_id": task.id}
    rpc = {"reply_to": f"taskq.reply.{uuid.uuid4().hex}", "correlation_id": task.id}
    body = task.body()
    return {
        "bare": amqp.Message(body, **plain),
        "taskq": amqp.Message(body, **plain, **identity),
        "taskq rpc": amqp.Message(body, **plain, **identity, **rpc),
        "bare + 200 B": amqp.Message(body + b"\x00" * 200, **plain),
        "lean": amqp.Message(body, **plain, type=task.task, message_id=task.id),
    }


def consume(queue: str, global_qos: bool) -> None:
    """One consumer process: prefetch 1, ack each message, until SIGTERM (the default: exit).

    ``global_qos`` adds the channel-wide limit taskq's worker sets as well, to see what it costs.
    """
    with Connection(BROKER_URL) as connection:
        connection.connect()
        channel = connection.channel()
        if global_qos:
            channel.basic_qos(0, 1, True)
        channel.basic_qos(0, 1, False)
        channel.basic_consume(queue=queue, callback=lambda message: channel.basic_ack(message.delivery_tag))
        while True:
            try:
                connection.drain_events(timeout=1)
            except TimeoutError:
                pass


def preload(channel: amqp.Channel, message: amqp.Message, n: int) -> None:
    """n persistent copies, with publisher confirms (py-amqp waits for each, as the harness's preloads do)."""
    for _ in range(n):
        channel.basic_publish(message, exchange="", routing_key=QUEUE)


def drain(n: int, log_path: Path, global_qos: bool) -> tuple[float, float]:
    """Start the consumers on the loaded queue; (messages/s, broker CPU µs per message)."""
    command = python_command("-m", "bench.envelope_cost", "--consume", QUEUE, *(["--global-qos"] if global_qos else []))
    workers = WorkerProcesses([command] * CONSUMERS, log_path)
    try:
        while queue_depth(QUEUE) == n:  # timing starts once they are consuming
            time.sleep(0.01)
        broker = broker_pid()
        broker_before, started = cpu_seconds(broker) if broker else 0.0, time.perf_counter()
        while queue_depth(QUEUE) > 0:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        broker_cpu = (cpu_seconds(broker) - broker_before) if broker else float("nan")
    finally:
        workers.stop()
    return n / elapsed, broker_cpu / n * 1e6


def ratio(value: float, bare: float) -> float:
    """value / bare; NaN when bare measured nothing (a tiny run inside one CPU clock tick)."""
    return value / bare if bare else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per shape and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--global-qos", action="store_true",
                        help="consumers also set a channel-wide prefetch of 1, as taskq's worker does")
    parser.add_argument("--consume", metavar="QUEUE", help=argparse.SUPPRESS)  # a consumer process
    args = parser.parse_args(argv)
    if args.consume:
        consume(args.consume, args.global_qos)
        return 0

    messages = shapes()
    rates: dict[str, list[float]] = defaultdict(list)
    broker_us: dict[str, list[float]] = defaultdict(list)
    log_path = Path(tempfile.mkdtemp(prefix="taskq-envelope-")) / "consumers.log"
    with Connection(BROKER_URL, transport_options={"confirm_publish": True}) as connection:
        channel = connection.default_channel
        channel.queue_declare(QUEUE, durable=True, auto_delete=False)
        try:
            for round_number in range(1, args.rounds + 1):
                for name, message in messages.items():
                    print(f"round {round_number}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
                    preload(channel, message, args.n)
                    rate, cpu = drain(args.n, log_path, args.global_qos)
                    rates[name].append(rate)
                    broker_us[name].append(cpu)
        finally:
            delete_queues([QUEUE])

    sizes = {name: len(message.body) + len(message._serialize_properties()) for name, message in messages.items()}
    qos = "prefetch 1 per consumer and per channel" if args.global_qos else "prefetch 1"
    print(f"{args.n:,} persistent messages per shape, {CONSUMERS} ack-only py-amqp consumers ({qos}), "
          f"medians of {args.rounds} rounds (ratios to bare within each round)")
    print(f"{'shape':<14} {'bytes':>6} {'drain msg/s':>12} {'ratio':>6} {'broker µs/msg':>14} {'ratio':>6}")
    for name in messages:
        rate_ratio = statistics.median(map(ratio, rates[name], rates["bare"]))
        cpu_ratio = statistics.median(map(ratio, broker_us[name], broker_us["bare"]))
        print(f"{name:<14} {sizes[name]:>6} {statistics.median(rates[name]):>12,.0f} {rate_ratio:>5.2f}x "
              f"{statistics.median(broker_us[name]):>14.0f} {cpu_ratio:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
