"""The embedded broker through plain kombu, across real processes, on a throwaway file.

What RabbitMQ would give us and the stock kombu virtual transports do not: routing and
counts shared between processes, and a message held by a killed consumer coming back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

import taskq
import taskq.embedded
from taskq.embedded import default_url
from tests.support.embedded import children, drain, queue_state, url, wait_until  # noqa: F401  (fixtures)


# -- URL ---------------------------------------------------------------------------------


def test_absolute_path_in_url_round_trips(tmp_path: Path) -> None:
    url = f"taskq+sqlite://{tmp_path}/sub dir/broker.db"
    with Connection(url) as connection:
        connection.connect()
        assert connection.transport.path == f"{tmp_path}/sub dir/broker.db"
        assert connection.as_uri() == url
    assert (tmp_path / "sub dir" / "broker.db").exists()


def test_default_url_lives_under_taskq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_HOME", str(tmp_path / "home"))
    assert default_url() == f"taskq+sqlite://{tmp_path}/home/broker.db"
    with Connection("taskq+sqlite://") as connection:
        connection.connect()
        assert connection.transport.path == f"{tmp_path}/home/broker.db"
    taskq.embedded.register()  # idempotent
    assert (tmp_path / "home" / "broker.db").exists()


def test_unusable_database_path_is_refused_not_retried(tmp_path: Path) -> None:
    """A path under a file is no broker now and won't be after a retry: one BrokerError
    naming it, raised when the transport is made (before a worker forks its children)."""
    (tmp_path / "a-file").write_text("not a folder")
    connection = Connection(f"taskq+sqlite://{tmp_path}/a-file/broker.db")
    with pytest.raises(taskq.BrokerError, match="a-file/broker.db") as refused:
        connection.transport  # noqa: B018
    assert not isinstance(refused.value, Connection("memory://").connection_errors)


# -- one process -------------------------------------------------------------------------


def test_publish_consume_ack_in_order(url: str) -> None:
    queue = Queue("work", Exchange("jobs", "direct"), routing_key="work")
    received = []
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for number in range(5):
            producer.publish(
                {"n": number}, exchange="jobs", routing_key="work", declare=[queue], headers={"attempt": number}
            )
        assert queue_state(connection, "work") == (5, 0)

        def on_message(body: dict, message) -> None:
            received.append((body["n"], message.headers["attempt"]))
            message.ack()

        with Consumer(connection.channel(), [queue], callbacks=[on_message]):
            drain(connection, received, 5)
        assert received == [(n, n) for n in range(5)]
        assert queue_state(connection, "work") == (0, 0)


def test_binary_body_survives(url: str) -> None:
    blob = bytes(range(256)) * 3
    with Connection(url) as connection:
        queue = Queue("bytes")
        Producer(connection.channel()).publish(
            blob,
            routing_key="bytes",
            declare=[queue],
            serializer=None,
            content_type="application/octet-stream",
            content_encoding="binary",
        )
        message = queue(connection.channel()).get(no_ack=True)
        assert message.body == blob


def test_prefetch_one_withholds_the_second_message_until_ack(url: str) -> None:
    queue = Queue("one-at-a-time")
    received = []
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        producer.publish("first", routing_key=queue.name, declare=[queue])
        producer.publish("second", routing_key=queue.name)
        channel = connection.channel()
        channel.basic_qos(prefetch_size=0, prefetch_count=1, a_global=True)  # py-amqp's spelling, as taskq uses
        with Consumer(channel, [queue], on_message=received.append):
            drain(connection, received, 1)
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=0.2)
            assert [m.payload for m in received] == ["first"]
            assert queue_state(connection, queue.name) == (1, 1)  # the other one is unacked, not ready
            received[0].ack()
            drain(connection, received, 2)
        assert [m.payload for m in received] == ["first", "second"]


def test_ack_from_another_thread_wakes_the_draining_thread(url: str) -> None:
    """Without the nudge the drain would sleep its full poll interval (1 s) first."""
    queue = Queue("threaded")
    received = []
    acked_at = []
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        producer.publish("first", routing_key=queue.name, declare=[queue])
        producer.publish("second", routing_key=queue.name)
        channel = connection.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [queue], on_message=received.append):
            drain(connection, received, 1)

            def ack_soon() -> None:
                time.sleep(0.05)  # let the main thread fall asleep in drain_events first
                acked_at.append(time.monotonic())  # before: the delivery may beat the line after ack()
                received[0].ack()

            acker = threading.Thread(target=ack_soon)
            acker.start()
            drain(connection, received, 2)
            acker.join(5)
        assert received[1].payload == "second"
        assert time.monotonic() - acked_at[0] < 0.5


def test_reject_requeue_and_connection_close_give_the_message_back(url: str, tmp_path: Path) -> None:
    queue = Queue("again")
    with Connection(url) as connection:
        Producer(connection.channel()).publish("job", routing_key=queue.name, declare=[queue])
        first = queue(connection.channel()).get()
        assert first.payload == "job" and not first.delivery_info.get("redelivered")
        first.requeue()
        second = queue(connection.channel()).get()
        assert second.payload == "job" and second.delivery_info["redelivered"]
        assert queue_state(connection, queue.name) == (0, 0)
    # closed without ack: the message is ready again for the next connection
    with Connection(url) as connection:
        assert queue_state(connection, queue.name) == (1, 0)
        third = queue(connection.channel()).get()
        third.ack()
        assert queue_state(connection, queue.name) == (0, 0)


def test_priority_queue_delivers_high_first(url: str) -> None:
    queue = Queue("urgent", max_priority=9)
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for name, priority in [("low", 1), ("high", 9), ("mid", 5), ("low2", 1)]:
            producer.publish(name, routing_key=queue.name, declare=[queue], priority=priority)
        bound = queue(connection.channel())
        assert [bound.get(no_ack=True).payload for _ in range(4)] == ["high", "mid", "low", "low2"]


def test_passive_declare_purge_and_delete(url: str) -> None:
    queue = Queue("scratch")
    with Connection(url) as connection:
        channel = connection.channel()
        with pytest.raises(amqp.exceptions.NotFound):
            channel.queue_declare(queue="scratch", passive=True)
        channel = connection.channel()
        producer = Producer(channel)
        for number in range(4):
            producer.publish(number, routing_key="scratch", declare=[queue])
        assert queue_state(connection, "scratch") == (4, 0)
        assert queue(connection.channel()).purge() == 4
        assert queue_state(connection, "scratch") == (0, 0)
        producer.publish("after purge", routing_key="scratch")
        queue(connection.channel()).delete()
        with pytest.raises(connection.channel_errors):
            queue_state(connection, "scratch")
        # like RabbitMQ: the default exchange drops a message for a queue that is gone
        producer.publish("dropped", routing_key="scratch")
        queue(connection.channel()).declare()
        assert queue_state(connection, "scratch") == (0, 0)


def test_exclusive_and_auto_delete_queues_go_away(url: str) -> None:
    with Connection(url) as owner, Connection(url) as other:
        Queue("mine", exclusive=True)(owner.channel()).declare()
        with pytest.raises(amqp.exceptions.ResourceLocked):
            Queue("mine", exclusive=True)(other.channel()).declare()
        auto = Queue("transient", auto_delete=True)
        auto(owner.channel()).declare()
        consumer = Consumer(owner.channel(), [auto])
        consumer.consume()
        assert queue_state(other, "transient") == (0, 1)
        consumer.cancel()
        with pytest.raises(amqp.exceptions.NotFound):
            queue_state(other, "transient")
        owner.release()
        with pytest.raises(amqp.exceptions.NotFound):
            queue_state(other, "mine")


def test_publish_to_undeclared_exchange_is_an_error(url: str) -> None:
    with Connection(url) as connection:
        with pytest.raises(amqp.exceptions.NotFound):
            Producer(connection.channel()).publish("x", exchange="nowhere", routing_key="k")


def test_forked_child_leaves_the_parents_connection_and_reservations_alone(url: str) -> None:
    """taskq's worker forks its children; they drop the inherited connection and open their own."""
    queue = Queue("forked")
    with Connection(url) as parent:
        producer = Producer(parent.channel())
        producer.publish("held by parent", routing_key=queue.name, declare=[queue])
        producer.publish("for the child", routing_key=queue.name)
        held = queue(parent.channel()).get()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's outcome is its exit code
            code = 1
            try:
                parent.collect()
                with Connection(url) as own:
                    message = queue(own.channel()).get()
                    if message is not None and message.payload == "for the child":
                        message.ack()
                        code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert queue_state(parent, queue.name) == (0, 0)  # still reserved by us, not handed back
        held.ack()
        producer.publish("after the fork", routing_key=queue.name)
        assert queue(parent.channel()).get(no_ack=True).payload == "after the fork"


# -- across processes --------------------------------------------------------------------

BINDER = """
import sys, json
from kombu import Connection, Consumer, Exchange, Queue
direct, topic, fanout = Exchange("d", "direct"), Exchange("t", "topic"), Exchange("f", "fanout")
queues = [
    Queue("red", direct, routing_key="red"),
    Queue("orange", topic, routing_key="*.orange.*"),
    Queue("lazy", topic, routing_key="lazy.#"),
    Queue("fan1", fanout),
    Queue("fan2", fanout),
]
with Connection(sys.argv[1]) as connection:
    channel = connection.channel()

    def report(message, queue_name):
        print(json.dumps([message.decode(), message.delivery_info["exchange"], queue_name]), flush=True)
        message.ack()

    for queue in queues:
        Consumer(channel, [queue], on_message=lambda message, name=queue.name: report(message, name)).consume()
    print("bound", flush=True)
    while True:
        connection.drain_events()
"""


def test_direct_topic_and_fanout_route_to_queues_bound_in_another_process(url: str, children) -> None:
    binder = children(BINDER, url)
    binder.wait_for("bound")
    with Connection(url) as connection:
        producer = Producer(connection.channel())  # declares nothing: the bindings are the other process's
        sends = [
            ("d", "red", "red-1"),
            ("d", "blue", "nobody"),
            ("t", "quick.orange.rabbit", "orange-only"),
            ("t", "lazy.pink.rabbit", "lazy-only"),
            ("t", "lazy", "lazy-zero-words"),
            ("t", "lazy.orange.elephant", "both-topics"),
            ("t", "quick.brown.fox", "nobody"),
            ("t", "quick.orange.male.rabbit", "nobody"),
            ("f", "anything", "to-all-fans"),
        ]
        for exchange, key, body in sends:
            producer.publish(body, exchange=exchange, routing_key=key)
        expected = sorted(
            [
                ["red-1", "d", "red"],
                ["orange-only", "t", "orange"],
                ["lazy-only", "t", "lazy"],
                ["lazy-zero-words", "t", "lazy"],
                ["both-topics", "t", "orange"],
                ["both-topics", "t", "lazy"],
                ["to-all-fans", "f", "fan1"],
                ["to-all-fans", "f", "fan2"],
            ]
        )
        # A last message to every queue: queues are FIFO, so once these arrive, anything
        # misrouted before them would have arrived too.
        for name in ("red", "orange", "lazy", "fan1", "fan2"):
            producer.publish("end", routing_key=name)
        for name in ("red", "orange", "lazy", "fan1", "fan2"):
            binder.wait_for(json.dumps(["end", "", name]))
        received = sorted(json.loads(line) for line in binder.lines if line.startswith("[") and '"end"' not in line)
        assert received == expected
        for name in ("red", "orange", "lazy", "fan1", "fan2"):
            assert queue_state(connection, name) == (0, 1)


SERVER = """
import sys
from kombu import Connection, Consumer, Producer, Queue
with Connection(sys.argv[1]) as connection:
    producer = Producer(connection.channel())
    def serve(body, message):
        producer.publish(body.upper(), routing_key=message.properties["reply_to"],
                         correlation_id=message.properties["correlation_id"])
        message.ack()
    channel = connection.channel()
    channel.basic_qos(0, 1, False)
    with Consumer(channel, [Queue("rpc")], callbacks=[serve]):
        print("serving", flush=True)
        while True:
            connection.drain_events()
"""


def test_request_reply_with_correlation_id_across_processes(url: str, children) -> None:
    server = children(SERVER, url)
    server.wait_for("serving")
    replies = []
    with Connection(url) as connection:
        reply_queue = Queue("reply.caller", exclusive=True, auto_delete=True)
        producer = Producer(connection.channel())
        with Consumer(connection.channel(), [reply_queue], on_message=replies.append, no_ack=True):
            for number in range(20):
                producer.publish(
                    f"ping {number}", routing_key="rpc", reply_to=reply_queue.name, correlation_id=f"id-{number}"
                )
                drain(connection, replies, number + 1)
                assert replies[-1].payload == f"PING {number}"
                assert replies[-1].properties["correlation_id"] == f"id-{number}"
        assert queue_state(connection, "rpc") == (0, 1)


HOLDER = """
import sys, time
from kombu import Connection, Consumer, Queue
with Connection(sys.argv[1]) as connection:
    channel = connection.channel()
    channel.basic_qos(0, 1, False)
    def hold(body, message):
        print("holding " + body, flush=True)   # and never ack
    with Consumer(channel, [Queue("precious")], callbacks=[hold]):
        print("ready", flush=True)
        while True:
            try:
                connection.drain_events(timeout=1)
            except Exception:
                pass
"""


def test_message_held_by_a_sigkilled_consumer_is_delivered_again(url: str, children) -> None:
    queue = Queue("precious")
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        producer.publish("job-1", routing_key="precious", declare=[queue])
        producer.publish("job-2", routing_key="precious")
        holder = children(HOLDER, url)
        holder.wait_for("holding job-1")
        # prefetch=1: the holder gets nothing more while it holds job-1; another consumer does
        assert queue_state(connection, "precious") == (1, 1)
        second = queue(connection.channel()).get()
        assert second.payload == "job-2"
        second.ack()

        os.kill(holder.process.pid, signal.SIGKILL)  # left unreaped: a zombie still has a /proc entry
        wait_until(lambda: queue_state(connection, "precious") == (1, 0), what="the dead holder's message to return")
        received = []
        with Consumer(connection.channel(), [queue], on_message=received.append):
            drain(connection, received, 1)
        assert received[0].payload == "job-1"
        assert received[0].delivery_info["redelivered"]
        received[0].ack()
        assert queue_state(connection, "precious") == (0, 0)


def test_waiting_consumer_in_another_process_notices_a_killed_holder_by_itself(url: str, children) -> None:
    """No declare or connect prods the reaper here: the waiting consumer's own poll must."""
    queue = Queue("precious")
    with Connection(url) as connection:
        Producer(connection.channel()).publish("job", routing_key="precious", declare=[queue])
        holder = children(HOLDER, url)
        holder.wait_for("holding job")
        received = []
        with Consumer(connection.channel(), [queue], on_message=received.append):
            holder.process.kill()
            holder.process.wait()
            drain(connection, received, 1, timeout=5)
        assert received[0].payload == "job"


PRODUCER = """
import os, sys
from kombu import Connection, Producer
with Connection(sys.argv[1]) as connection:
    producer = Producer(connection.channel())
    for number in range(300):
        producer.publish({"from": os.getpid(), "n": number}, routing_key="busy")
    print("done", flush=True)
"""


def test_concurrent_processes_never_see_database_is_locked_and_lose_nothing(url: str, children) -> None:
    queue = Queue("busy")
    with Connection(url) as connection:
        queue(connection.channel()).declare()
        producers = [children(PRODUCER, url), children(PRODUCER, url)]
        received = []

        def on_message(body: dict, message) -> None:
            received.append((body["from"], body["n"]))
            message.ack()

        with Consumer(connection.channel(), [queue], callbacks=[on_message]):
            drain(connection, received, 600, timeout=20)
        for producer in producers:
            producer.wait_for("done")
        assert len(set(received)) == 600
        for pid in {sender for sender, _ in received}:  # FIFO per sender
            assert [n for sender, n in received if sender == pid] == list(range(300))
        assert queue_state(connection, "busy") == (0, 0)
