"""How fast the embedded broker is, next to kombu's stock filesystem transport, on this machine.

    python bench/embedded_broker.py [--depth 10000] [--round-trips 1000] [--skip-filesystem]

1. drain: pre-load --depth messages, then 2 consumer processes (prefetch=1, ack each)
   empty the queue; msgs/s from the moment both are consuming to the last ack.
   The same drain runs on ``filesystem://`` at the same depth, for the ratio.
2. round trip: 1,000 sequential request/reply calls to a consumer in another process
   (publish to a queue, it replies to an exclusive reply queue); p50/p99 in ms.
3. idle: CPU a consumer burns while waiting on an empty queue.
4. delays: --delays messages, each delayed 1-300 ms through a 32-level TTL/dead-letter
   cascade (taskq's broker-native delays, built as RabbitMQ wants them), to a consumer in
   another process; how late each arrives after its due time, p50/max in ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from kombu import Connection, Consumer, Exchange, Producer, Queue  # noqa: E402

import taskq.embedded  # noqa: E402,F401  (registers the taskq+sqlite transport)

BODY = {"task": "bench.noop", "id": "0" * 32, "args": [1, 2, 3], "kwargs": {"x": "y" * 64}}
CONSUMERS = 2


def connection_for(url: str, options: dict) -> Connection:
    return Connection(url, transport_options=options)


# -- drain -------------------------------------------------------------------------------


def drain_worker(url: str, options: dict, queue_name: str, ready, go, results) -> None:
    with connection_for(url, options) as connection:
        channel = connection.channel()
        channel.basic_qos(0, 1, False)
        count = 0
        last_ack = 0.0

        def on_message(body, message) -> None:
            nonlocal count, last_ack
            message.ack()
            count += 1
            last_ack = time.monotonic()

        with Consumer(channel, [Queue(queue_name)], callbacks=[on_message]):
            ready.put(os.getpid())
            go.wait()
            while True:
                try:
                    connection.drain_events(timeout=1.0)
                except socket.timeout:
                    break  # a second with nothing: the queue is empty
        results.put((count, last_ack))


def measure_drain(url: str, options: dict, depth: int) -> tuple[float, float]:
    """(publish msgs/s, drain msgs/s)."""
    queue = Queue("bench.drain")
    with connection_for(url, options) as connection:
        producer = Producer(connection.channel())
        queue(connection.channel()).declare()
        queue(connection.channel()).purge()
        started = time.monotonic()
        for _ in range(depth):
            producer.publish(BODY, routing_key=queue.name, serializer="json")
        publish_rate = depth / (time.monotonic() - started)

    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(target=drain_worker, args=(url, options, queue.name, ready, go, results))
        for _ in range(CONSUMERS)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=60)
    started = time.monotonic()
    go.set()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    total = sum(count for count, _ in outcomes)
    if total != depth:
        raise SystemExit(f"drained {total} of {depth} messages from {url}")
    finished = max(last for _, last in outcomes)
    return publish_rate, depth / (finished - started)


# -- round trip --------------------------------------------------------------------------


def rpc_server(url: str, ready, stop) -> None:
    with Connection(url) as connection:
        producer = Producer(connection.channel())

        def serve(body, message) -> None:
            producer.publish(
                body,
                routing_key=message.properties["reply_to"],
                correlation_id=message.properties["correlation_id"],
                serializer="json",
            )
            message.ack()

        channel = connection.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [Queue("bench.rpc")], callbacks=[serve]):
            ready.set()
            while not stop.is_set():
                try:
                    connection.drain_events(timeout=0.5)
                except socket.timeout:
                    pass


def measure_round_trips(url: str, count: int) -> list[float]:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    server = context.Process(target=rpc_server, args=(url, ready, stop))
    server.start()
    timings: list[float] = []
    try:
        if not ready.wait(60):
            raise SystemExit("rpc server did not start")
        with Connection(url) as connection:
            reply_queue = Queue(f"bench.reply.{os.getpid()}", exclusive=True, auto_delete=True)
            producer = Producer(connection.channel())
            replies: list = []
            with Consumer(connection.channel(), [reply_queue], on_message=replies.append, no_ack=True):
                for number in range(count + 50):  # the first 50 warm up
                    started = time.perf_counter()
                    producer.publish(
                        BODY,
                        routing_key="bench.rpc",
                        reply_to=reply_queue.name,
                        correlation_id=str(number),
                        serializer="json",
                    )
                    while len(replies) <= number:
                        connection.drain_events(timeout=5)
                    if replies[number].properties["correlation_id"] != str(number):
                        raise SystemExit("reply out of order")
                    if number >= 50:
                        timings.append((time.perf_counter() - started) * 1000)
    finally:
        stop.set()
        server.join(10)
    return timings


# -- idle --------------------------------------------------------------------------------


def idle_worker(url: str, seconds: float, results) -> None:
    with Connection(url) as connection:
        queue = Queue("bench.idle")
        with Consumer(connection.channel(), [queue], callbacks=[]):
            before = resource.getrusage(resource.RUSAGE_SELF)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=deadline - time.monotonic())
                except socket.timeout:
                    pass
            after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results.put(cpu / seconds)


def measure_idle_cpu(url: str, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=idle_worker, args=(url, seconds, results))
    worker.start()
    share = results.get(timeout=seconds + 60)
    worker.join()
    return share


# -- delays ------------------------------------------------------------------------------

LEVELS = 32
DELAYED_QUEUE = "bench.delayed"


def level_name(level: int) -> str:
    return f"bench.delay.{level:02d}"


def declare_cascade(connection: Connection) -> None:
    """Level k: a topic exchange and a queue holding messages 2**k ms; a 1 bit in the
    routing key goes through the level's queue, a 0 bit straight to the next exchange."""
    channel = connection.channel()
    deliver = Exchange("bench.delay.deliver", "topic", channel=channel)
    deliver.declare()
    for level in range(LEVELS):
        Exchange(level_name(level), "topic", channel=channel).declare()
    for level in range(LEVELS - 1, -1, -1):
        skip = "*." * (LEVELS - 1 - level)
        next_exchange = level_name(level - 1) if level else deliver.name
        Queue(
            level_name(level),
            Exchange(level_name(level), "topic"),
            routing_key=skip + "1.#",
            queue_arguments={"x-message-ttl": 2**level, "x-dead-letter-exchange": next_exchange},
        )(channel).declare()
        Exchange(next_exchange, "topic", channel=channel).bind_to(level_name(level), routing_key=skip + "0.#")
    Queue(DELAYED_QUEUE, deliver, routing_key="*." * LEVELS + DELAYED_QUEUE)(channel).declare()


def delayed_consumer(url: str, count: int, ready, results) -> None:
    with Connection(url) as connection:
        lateness: list[float] = []

        def on_message(body, message) -> None:
            lateness.append((time.time() - body["due"]) * 1000)
            message.ack()

        with Consumer(connection.channel(), [Queue(DELAYED_QUEUE)], callbacks=[on_message]):
            ready.set()
            deadline = time.monotonic() + 60
            while len(lateness) < count and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=1.0)
                except socket.timeout:
                    pass
    results.put(lateness)


def measure_delay_lateness(url: str, count: int) -> list[float]:
    with Connection(url) as connection:
        declare_cascade(connection)
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    consumer = context.Process(target=delayed_consumer, args=(url, count, ready, results))
    consumer.start()
    if not ready.wait(60):
        raise SystemExit("delayed consumer did not start")
    chooser = random.Random(7)
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for _ in range(count):
            delay_ms = chooser.randint(1, 300)
            key = ".".join(f"{delay_ms:0{LEVELS}b}") + "." + DELAYED_QUEUE
            due = time.time() + delay_ms / 1000
            producer.publish({"due": due}, exchange=level_name(LEVELS - 1), routing_key=key, serializer="json")
            time.sleep(0.005)  # spread the due times, as real delayed tasks are
    lateness = results.get(timeout=120)
    consumer.join()
    if len(lateness) != count:
        raise SystemExit(f"{len(lateness)} of {count} delayed messages arrived")
    return lateness


# -- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=10_000)
    parser.add_argument("--round-trips", type=int, default=1_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--skip-filesystem", action="store_true")
    parser.add_argument("--delays", type=int, default=200, help="delayed messages; 0 skips the measure")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    try:
        url = f"taskq+sqlite://{folder}/broker.db"
        rows: list[tuple[str, str]] = []
        publish_rate, drain_rate = measure_drain(url, {}, args.depth)
        rows.append((f"embedded: publish {args.depth:,} (1 process)", f"{publish_rate:,.0f} msgs/s"))
        rows.append((f"embedded: drain {args.depth:,}, {CONSUMERS} consumers, prefetch=1", f"{drain_rate:,.0f} msgs/s"))
        if not args.skip_filesystem:
            data = folder / "fs"
            data.mkdir()
            options = {"data_folder_in": str(data), "data_folder_out": str(data), "polling_interval": 0.001}
            fs_publish, fs_drain = measure_drain("filesystem://", options, args.depth)
            rows.append((f"filesystem://: publish {args.depth:,} (1 process)", f"{fs_publish:,.0f} msgs/s"))
            rows.append((f"filesystem://: drain {args.depth:,}, {CONSUMERS} consumers", f"{fs_drain:,.0f} msgs/s"))
            rows.append(("drain ratio embedded / filesystem", f"{drain_rate / fs_drain:.1f}x"))
        timings = measure_round_trips(url, args.round_trips)
        quantiles = statistics.quantiles(timings, n=100)
        rows.append((f"embedded: request/reply x{len(timings):,}, p50", f"{statistics.median(timings):.2f} ms"))
        rows.append((f"embedded: request/reply x{len(timings):,}, p99", f"{quantiles[98]:.2f} ms"))
        idle = measure_idle_cpu(url, args.idle_seconds)
        rows.append((f"embedded: idle consumer CPU over {args.idle_seconds:g} s", f"{idle * 100:.2f} % of a core"))
        if args.delays:
            lateness = measure_delay_lateness(url, args.delays)
            rows.append((f"embedded: 32-level delay x{args.delays}, late p50", f"{statistics.median(lateness):.1f} ms"))
            rows.append((f"embedded: 32-level delay x{args.delays}, late max", f"{max(lateness):.1f} ms"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    width = max(len(name) for name, _ in rows)
    print(f"\n{'measure'.ljust(width)}  result")
    print(f"{'-' * width}  {'-' * 16}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
