"""TTL, dead-lettering, max-length, delivery limits and exchange-to-exchange bindings on
the embedded broker, through plain kombu: what taskq's delay cascade is built from.

Timings are checked loosely: never before the TTL, and well before the one-second poll
that would deliver it if the wake-up on "next message due" were missing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import amqp.exceptions
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tests.support.embedded import children, drain, queue_state, url, wait_until  # noqa: F401  (fixtures)


#: Late by more than this and the broker slept through the due time (it polls each 1 s).
LATE = 0.6


def raw_count(url: str, queue: str) -> int:
    """Read the broker file directly: unlike a declare, this moves no message itself."""
    path = url[len("taskq+sqlite://") :]
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT count(*) FROM messages WHERE queue = ?", (queue,)).fetchone()[0]


def dead_lettering(exchange: str = "", routing_key: str | None = None, **more: object) -> dict:
    arguments = {"x-dead-letter-exchange": exchange, **more}
    if routing_key is not None:
        arguments["x-dead-letter-routing-key"] = routing_key
    return arguments


def receive(connection: Connection, queue: Queue, count: int, timeout: float = 5.0) -> list[tuple[float, object]]:
    """(monotonic arrival time, message) for ``count`` messages consumed from ``queue``."""
    received: list = []

    def on_message(message) -> None:
        received.append((time.monotonic(), message))
        message.ack()

    with Consumer(connection.channel(), [queue], on_message=on_message):
        drain(connection, received, count, timeout=timeout)
    return received


# -- TTL ---------------------------------------------------------------------------------


def test_queue_ttl_dead_letters_to_the_default_exchange(url: str) -> None:
    ready = Queue("ready")
    waiting = Queue("waiting", queue_arguments=dead_lettering("", "ready", **{"x-message-ttl": 200}))
    with Connection(url) as connection:
        ready(connection.channel()).declare()
        producer = Producer(connection.channel())
        sent = time.monotonic()
        producer.publish({"n": 1}, routing_key="waiting", declare=[waiting], headers={"mine": "kept"})
        [(arrived, message)] = receive(connection, ready, 1)
        assert 0.2 <= arrived - sent < 0.2 + LATE
        assert message.payload == {"n": 1}
        assert message.headers["mine"] == "kept"
        assert message.delivery_info["routing_key"] == "ready"
        [death] = message.headers["x-death"]
        assert death["queue"] == "waiting" and death["reason"] == "expired" and death["count"] == 1
        assert death["exchange"] == "" and death["routing-keys"] == ["waiting"]
        assert message.headers["x-first-death-reason"] == "expired"
        assert queue_state(connection, "waiting") == (0, 0)


def test_queue_ttl_dead_letters_through_a_topic_exchange_keeping_the_routing_key(url: str) -> None:
    inbound = Exchange("inbound", "direct")
    after = Exchange("after", "topic")
    late = Queue("late", after, routing_key="jobs.#")
    delay = Queue("delay", inbound, routing_key="jobs.email", queue_arguments=dead_lettering("after"))
    delay.queue_arguments["x-message-ttl"] = 150
    with Connection(url) as connection:
        late(connection.channel()).declare()
        delay(connection.channel()).declare()
        sent = time.monotonic()
        Producer(connection.channel()).publish("mail", exchange=inbound, routing_key="jobs.email")
        [(arrived, message)] = receive(connection, late, 1)
        assert 0.15 <= arrived - sent < 0.15 + LATE
        assert message.delivery_info["exchange"] == "after"
        assert message.delivery_info["routing_key"] == "jobs.email"
        assert message.headers["x-death"][0]["exchange"] == "inbound"


def test_per_message_expiration(url: str) -> None:
    inbox = Queue("inbox", queue_arguments=dead_lettering("", "inbox.expired"))
    expired = Queue("inbox.expired")
    with Connection(url) as connection:
        expired(connection.channel()).declare()
        producer = Producer(connection.channel())
        sent = time.monotonic()
        producer.publish("short", routing_key="inbox", declare=[inbox], expiration=0.15)
        producer.publish("long", routing_key="inbox", expiration=30)
        producer.publish("forever", routing_key="inbox")
        [(arrived, message)] = receive(connection, expired, 1)
        assert 0.15 <= arrived - sent < 0.15 + LATE
        assert message.payload == "short"
        assert "expiration" not in message.properties  # else it would expire again downstream
        assert message.headers["x-death"][0]["original-expiration"] == "150"
        assert queue_state(connection, "inbox") == (2, 0)
        bound = inbox(connection.channel())
        assert [bound.get(no_ack=True).payload for _ in range(2)] == ["long", "forever"]


def test_a_message_expiring_without_a_dead_letter_exchange_is_dropped_and_never_delivered(url: str) -> None:
    queue = Queue("fleeting", message_ttl=0.05)
    with Connection(url) as connection:
        Producer(connection.channel()).publish("gone", routing_key="fleeting", declare=[queue])
        with Consumer(connection.channel(), [Queue("idle")]):
            deadline = time.monotonic() + 1
            while raw_count(url, "fleeting") and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=0.05)
                except TimeoutError:
                    pass
        assert raw_count(url, "fleeting") == 0
        assert queue(connection.channel()).get(no_ack=True) is None


def test_a_dead_letter_loop_without_rejects_is_cut_as_rabbitmq_cuts_it(url: str) -> None:
    loop = Queue("loop", queue_arguments=dead_lettering("", "loop", **{"x-message-ttl": 50}))
    with Connection(url) as connection:
        Producer(connection.channel()).publish("round", routing_key="loop", declare=[loop])
        with Consumer(connection.channel(), [Queue("idle")]):
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=deadline - time.monotonic())
                except TimeoutError:
                    pass
        assert raw_count(url, "loop") == 0


# -- the delay cascade -------------------------------------------------------------------

LEVELS = 3
UNIT = 0.05  # level k holds a message 2**k units


def declare_cascade(connection: Connection) -> Queue:
    """taskq's delay topology in small: topic exchange + TTL queue per level, a 1 bit
    goes through the level's queue, a 0 bit skips to the next level's exchange."""
    channel = connection.channel()
    deliver = Exchange("d.deliver", "topic", channel=channel)
    deliver.declare()
    for level in range(LEVELS - 1, -1, -1):
        Exchange(f"d.{level}", "topic", channel=channel).declare()
    for level in range(LEVELS - 1, -1, -1):
        skip = "*." * (LEVELS - 1 - level)
        next_exchange = f"d.{level - 1}" if level else "d.deliver"
        Queue(
            f"d.{level}",
            Exchange(f"d.{level}", "topic"),
            routing_key=skip + "1.#",
            queue_arguments={
                "x-message-ttl": int(2**level * UNIT * 1000),
                "x-dead-letter-exchange": next_exchange,
                "x-queue-type": "quorum",  # accepted and ignored, as the reliability layer sends it
                "x-overflow": "reject-publish",
                "x-dead-letter-strategy": "at-least-once",
            },
        )(channel).declare()
        Exchange(next_exchange, "topic", channel=channel).bind_to(f"d.{level}", routing_key=skip + "0.#")
    work = Queue("work", deliver, routing_key="*." * LEVELS + "work")
    work(channel).declare()
    return work


def cascade_key(units: int) -> str:
    return ".".join(f"{units:0{LEVELS}b}") + ".work"


CASCADE_CONSUMER = """
import json, sys, time
from kombu import Connection, Consumer, Queue
with Connection(sys.argv[1]) as connection:
    def on_message(body, message):
        print(json.dumps([body, time.time(), message.delivery_info["routing_key"]]), flush=True)
        message.ack()
    with Consumer(connection.channel(), [Queue("work")], callbacks=[on_message]):
        print("consuming", flush=True)
        while True:
            connection.drain_events()
"""


def test_three_level_cascade_delivers_in_delay_order(url: str, children) -> None:
    with Connection(url) as connection:
        declare_cascade(connection)
        consumer = children(CASCADE_CONSUMER, url)
        consumer.wait_for("consuming")
        producer = Producer(connection.channel())
        delays = [7, 3, 5, 1, 6, 0, 2]
        sent = time.time()
        for units in delays:
            producer.publish(units, exchange="d.2", routing_key=cascade_key(units), serializer="json")
        wait_until(lambda: len([line for line in consumer.lines if line.startswith("[")]) == len(delays))
        arrivals = [json.loads(line) for line in consumer.lines if line.startswith("[")]
        assert [units for units, _, _ in arrivals] == sorted(delays)
        for units, arrived, routing_key in arrivals:
            assert routing_key == cascade_key(units)  # kept through every level
            assert units * UNIT - 0.005 <= arrived - sent < units * UNIT + LATE
        for level in range(LEVELS):
            assert raw_count(url, f"d.{level}") == 0


# -- expiry needs no consumer of the TTL queue -------------------------------------------

BYSTANDER = """
import sys
from kombu import Connection, Consumer, Queue
with Connection(sys.argv[1]) as connection:
    with Consumer(connection.channel(), [Queue("elsewhere")], callbacks=[]):
        print("waiting", flush=True)
        while True:
            try:
                connection.drain_events(timeout=5)
            except Exception:
                pass
"""


def test_a_process_consuming_another_queue_expires_the_message(url: str, children) -> None:
    """Nobody consumes 'held' or 'released', and this process never drains: the
    bystander, asleep on an unrelated queue, must wake when 'held' comes due."""
    held = Queue("held", queue_arguments=dead_lettering("", "released", **{"x-message-ttl": 300}))
    with Connection(url) as connection:
        Queue("released")(connection.channel()).declare()
        held(connection.channel()).declare()
        bystander = children(BYSTANDER, url)
        bystander.wait_for("waiting")
        sent = time.monotonic()
        Producer(connection.channel()).publish("parcel", routing_key="held")
        wait_until(lambda: raw_count(url, "released") == 1, timeout=0.3 + LATE, what="the bystander to move it")
        assert time.monotonic() - sent >= 0.3
        assert raw_count(url, "held") == 0


def test_without_any_draining_process_nothing_expires(url: str) -> None:
    """The other side of the test above: it is the bystander's doing, not ours."""
    held = Queue("held", queue_arguments=dead_lettering("", "released", **{"x-message-ttl": 50}))
    with Connection(url) as connection:
        Queue("released")(connection.channel()).declare()
        Producer(connection.channel()).publish("parcel", routing_key="held", declare=[held])
        time.sleep(0.2)  # not a synchronisation: nothing may happen during it
        assert (raw_count(url, "held"), raw_count(url, "released")) == (1, 0)
        assert queue_state(connection, "held") == (0, 0)  # due, so not counted, and the declare moved it
        assert raw_count(url, "released") == 1


# -- reject, max-length, delivery limit --------------------------------------------------


def test_reject_without_requeue_dead_letters_or_drops(url: str) -> None:
    jobs = Queue("jobs", queue_arguments=dead_lettering("", "jobs.dead"))
    plain = Queue("plain")
    with Connection(url) as connection:
        Queue("jobs.dead")(connection.channel()).declare()
        producer = Producer(connection.channel())
        producer.publish("bad", routing_key="jobs", declare=[jobs])
        producer.publish("also bad", routing_key="plain", declare=[plain])
        jobs(connection.channel()).get().reject()
        plain(connection.channel()).get().reject()
        assert queue_state(connection, "jobs") == (0, 0)
        assert queue_state(connection, "plain") == (0, 0)
        dead = Queue("jobs.dead")(connection.channel()).get(no_ack=True)
        assert dead.payload == "bad"
        [death] = dead.headers["x-death"]
        assert (death["queue"], death["reason"], death["count"]) == ("jobs", "rejected", 1)
        assert raw_count(url, "plain") == 0


def test_max_length_drop_head_dead_letters_the_oldest(url: str) -> None:
    events = Queue("events", max_length=3, queue_arguments=dead_lettering("", "events.dropped"))
    with Connection(url) as connection:
        Queue("events.dropped")(connection.channel()).declare()
        producer = Producer(connection.channel())
        for number in range(5):
            producer.publish(number, routing_key="events", declare=[events])
        assert queue_state(connection, "events") == (3, 0)
        bound = events(connection.channel())
        assert [bound.get(no_ack=True).payload for _ in range(3)] == [2, 3, 4]
        dropped = Queue("events.dropped")(connection.channel())
        first, second = dropped.get(no_ack=True), dropped.get(no_ack=True)
        assert [first.payload, second.payload] == [0, 1]
        assert first.headers["x-death"][0]["reason"] == "maxlen"


def test_max_length_without_dead_letter_exchange_just_drops_the_oldest(url: str) -> None:
    """The logs/events layer: per-subscriber queues keeping only the newest records."""
    events = Queue("log.subscriber", exclusive=True, queue_arguments={"x-max-length": 2, "x-overflow": "drop-head"})
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for number in range(4):
            producer.publish(number, routing_key=events.name, declare=[events])
        bound = events(connection.channel())
        assert [bound.get(no_ack=True).payload for _ in range(2)] == [2, 3]
        assert bound.get(no_ack=True) is None
        assert raw_count(url, events.name) == 0


def test_max_length_reject_publish_refuses_new_messages(url: str) -> None:
    """Silently without publisher confirms; with them (as taskq connects) the publish
    raises MessageNacked, as py-amqp raises it on RabbitMQ's nack."""
    queue = Queue("bounded", max_length=2, queue_arguments={"x-overflow": "reject-publish"})
    other = Queue("unbounded")
    fan = Exchange("both", "fanout")
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for number in range(4):
            producer.publish(number, routing_key="bounded", declare=[queue])
        bound = queue(connection.channel())
        assert [bound.get(no_ack=True).payload for _ in range(2)] == [0, 1]
        assert bound.get(no_ack=True) is None
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        producer = Producer(connection.channel())
        Queue("bounded", fan)(connection.channel()).declare()
        Queue("unbounded", fan)(connection.channel()).declare()
        producer.publish("fits", exchange=fan)
        producer.publish("fits too", exchange=fan)
        with pytest.raises(amqp.exceptions.MessageNacked):
            producer.publish("one too many", exchange=fan)
        assert queue_state(connection, "bounded") == (2, 0)
        assert queue_state(connection, "unbounded") == (3, 0)  # the other queue kept its copy
        assert queue(connection.channel()).get(no_ack=True).payload == "fits"
        producer.publish("room again", routing_key="bounded")
        assert [m.payload for m in iter(lambda: other(connection.channel()).get(no_ack=True), None)] == [
            "fits",
            "fits too",
            "one too many",
        ]


def test_delivery_limit_dead_letters_after_too_many_requeues(url: str) -> None:
    queue = Queue("flaky", queue_arguments=dead_lettering("", "flaky.dead", **{"x-delivery-limit": 2}))
    with Connection(url) as connection:
        Queue("flaky.dead")(connection.channel()).declare()
        Producer(connection.channel()).publish("poison", routing_key="flaky", declare=[queue])
        bound = queue(connection.channel())
        for _ in range(3):  # delivered, handed back, ... the third return is one too many
            bound.get().requeue()
        assert bound.get() is None
        dead = Queue("flaky.dead")(connection.channel()).get(no_ack=True)
        assert dead.payload == "poison"
        assert dead.headers["x-death"][0]["reason"] == "delivery_limit"


# -- exchange-to-exchange bindings -------------------------------------------------------


def test_exchange_to_exchange_bindings_route_once_even_round_a_loop(url: str) -> None:
    with Connection(url) as connection:
        channel = connection.channel()
        fan = Exchange("e.fan", "fanout", channel=channel)
        direct = Exchange("e.direct", "direct", channel=channel)
        topic = Exchange("e.topic", "topic", channel=channel)
        for exchange in (fan, direct, topic):
            exchange.declare()
        direct.bind_to(fan)  # fanout source: any key
        topic.bind_to(direct, routing_key="k.x")  # direct source: exact key
        fan.bind_to(topic, routing_key="k.*")  # topic source, and back to the start
        sink = Queue("sink", topic, routing_key="#")
        sink(channel).declare()
        producer = Producer(channel)
        producer.publish("once", exchange="e.fan", routing_key="k.x")
        producer.publish("wrong key", exchange="e.fan", routing_key="k.y")
        producer.publish("via direct", exchange="e.direct", routing_key="k.x")
        bound = sink(connection.channel())
        assert [bound.get(no_ack=True).payload for _ in range(2)] == ["once", "via direct"]
        assert bound.get(no_ack=True) is None
        topic.unbind_from(direct, routing_key="k.x")
        producer.publish("unbound", exchange="e.fan", routing_key="k.x")
        assert bound.get(no_ack=True) is None


def test_an_old_broker_file_gains_the_new_columns(tmp_path: Path) -> None:
    """A version-1 file (no TTL columns) is brought up to date on first open."""
    path = tmp_path / "broker.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE queues (name TEXT PRIMARY KEY, durable INTEGER NOT NULL, auto_delete INTEGER NOT NULL,
                max_priority INTEGER NOT NULL, arguments TEXT NOT NULL, had_consumer INTEGER NOT NULL DEFAULT 0,
                owner_pid INTEGER, owner_start INTEGER, owner_connection INTEGER);
            CREATE TABLE messages (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, priority INTEGER NOT NULL,
                payload TEXT NOT NULL, redelivered INTEGER NOT NULL DEFAULT 0,
                owner_pid INTEGER, owner_start INTEGER, owner_channel INTEGER);
            INSERT INTO queues (name, durable, auto_delete, max_priority, arguments)
                VALUES ('old', 1, 0, 0, '{"x-message-ttl": 50, "x-dead-letter-exchange": ""}'),
                       ('capped', 1, 0, 0, '{"x-max-length": 2}');
            INSERT INTO messages (queue, priority, payload) VALUES ('capped', 0, '{}'), ('capped', 0, '{}'),
                ('capped', 0, '{}');
            PRAGMA user_version = 1;
            """
        )
    with Connection(f"taskq+sqlite://{path}") as connection:
        Producer(connection.channel()).publish("aged", routing_key="old", headers={})
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT message_ttl, dead_letter_exchange FROM queues WHERE name = 'old'").fetchone() == (
                50,
                "",
            )
        wait_until(lambda: queue_state(connection, "old") == (0, 0), what="the old queue's TTL to apply")
        url = f"taskq+sqlite://{path}"
        assert counts(url, "capped") == (3, 3)  # what it held before the upgrade is counted
        Producer(connection.channel()).publish("newest", routing_key="capped")
        assert counts(url, "capped") == (2, 2)


def test_mandatory_message_no_queue_takes_is_an_error_and_properties_carry_the_content_type(url: str) -> None:
    """What taskq's dead-letter replay relies on, as on RabbitMQ: an unroutable mandatory
    publish raises, and a received message's properties name its content type."""
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        with pytest.raises(connection.channel_errors):
            producer.publish("lost", routing_key="nobody-here", mandatory=True)
        producer.publish("dropped quietly", routing_key="nobody-here")  # not mandatory: as before
        queue = Queue("typed")
        producer.publish(
            b"\x00raw",
            routing_key="typed",
            declare=[queue],
            mandatory=True,
            content_type="application/x-msgpack",
            content_encoding="binary",
        )
        message = queue(connection.channel()).get(no_ack=True)
        assert message.properties["content_type"] == "application/x-msgpack"
        assert message.properties["content_encoding"] == "binary"


def counts(url: str, queue: str) -> tuple[int, int]:
    """(the count a max-length queue keeps, the ready rows actually there)."""
    path = url[len("taskq+sqlite://") :]
    with closing(sqlite3.connect(path)) as db:
        kept = db.execute("SELECT ready FROM queues WHERE name = ?", (queue,)).fetchone()[0]
        actual = db.execute(
            "SELECT count(*) FROM messages WHERE queue = ? AND owner_pid IS NULL AND dead_reason IS NULL", (queue,)
        ).fetchone()[0]
    return kept, actual


def test_the_kept_count_of_a_max_length_queue_follows_every_change(url: str) -> None:
    """drop-head and reject-publish read a count kept by triggers, not count(*): it must
    stay right through reserve, requeue, reject, ack, expiry, purge and a dead holder."""
    capped = Queue("capped", max_length=4, queue_arguments=dead_lettering("", "capped.dead"))
    with Connection(url) as connection:
        Queue("capped.dead")(connection.channel()).declare()
        producer = Producer(connection.channel())

        def check(expected: int) -> None:
            assert counts(url, "capped") == (expected, expected)

        for number in range(6):
            producer.publish(number, routing_key="capped", declare=[capped])
        check(4)
        bound = capped(connection.channel())
        first, second, third = bound.get(), bound.get(), bound.get()
        check(1)
        first.requeue()
        check(2)
        second.reject()
        check(2)
        third.ack()
        producer.publish("short-lived", routing_key="capped", expiration=0.01)
        check(3)
        wait_until(lambda: queue_state(connection, "capped")[0] == 2, what="the short-lived message to expire")
        check(2)
        for number in range(5):
            producer.publish(number, routing_key="capped")
        check(4)
        assert bound.purge() == 4
        check(0)
        assert queue_state(connection, "capped.dead")[0] == 2 + 1 + 1 + 3  # maxlen, reject, expired, maxlen
    with Connection(url) as holder:
        Producer(holder.channel()).publish("held", routing_key="capped")
        held = capped(holder.channel()).get()
        assert held.payload == "held"
        check(0)
    check(1)  # the holder closed without acking: it came back
