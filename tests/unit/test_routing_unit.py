"""Fast tests of topic matching, gap counting and the app's routing records; no broker."""

from __future__ import annotations

import pytest

from taskq import App, ConfigurationError
from taskq.message import TaskMessage
from taskq.routing import EVENT_TASK, address, topic_matches
from taskq.subscriber import GapCounter


@pytest.mark.parametrize(
    "pattern, key, matches",
    [
        ("*.orange.*", "quick.orange.rabbit", True),
        ("*.orange.*", "lazy.orange.elephant", True),
        ("*.orange.*", "quick.brown.fox", False),
        ("*.orange.*", "orange", False),
        ("*.*.rabbit", "quick.orange.rabbit", True),
        ("*.*.rabbit", "quick.orange.male.rabbit", False),
        ("lazy.#", "lazy", True),
        ("lazy.#", "lazy.orange.male.rabbit", True),
        ("lazy.#", "lazyish.fox", False),
        ("#", "anything.at.all", True),
        ("order.*", "order.created", True),
        ("order.*", "order.created.late", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_topic_matching_follows_amqp_rules(pattern, key, matches):
    assert topic_matches(pattern, key) is matches


def test_gap_counter_counts_missing_sequence_numbers_per_source():
    gaps = GapCounter()
    assert gaps.see(("h", 1), 10) == 0  # joining mid-stream is not a gap
    assert gaps.see(("h", 1), 11) == 0
    assert gaps.see(("h", 2), 3) == 0
    assert gaps.see(("h", 1), 15) == 3
    assert gaps.see(("h", 2), 5) == 1
    assert gaps.see(("h", 1), 1) == 0  # a restarted process starts again at 1
    assert gaps.see(("h", 1), "x") == 0
    assert gaps.missed == 4


def test_bound_queues_are_consumed_and_declared_with_their_bindings():
    app = App("unit", default_queue="unit.default", broker="memory://")  # no delay bindings: only app.bind's
    app.bind("unit.orange", "unit.animals", "*.orange.*")
    app.bind("unit.orange", "unit.animals", "lazy.#")
    assert app.queue_names == ["unit.default", "unit.orange"]
    keys = sorted(b.routing_key for b in app.queue("unit.orange").bindings)
    assert keys == ["*.orange.*", "lazy.#"]
    assert app.queue("unit.default").bindings == set()
    assert app.routing.exchange("unit.animals").type == "topic"


def test_an_exchange_keeps_one_type():
    app = App("unit")
    app.bind("q1", "unit.severity", "error", exchange_type="direct")
    with pytest.raises(ConfigurationError):
        app.bind("q2", "unit.severity", "info.*", exchange_type="topic")
    with pytest.raises(ConfigurationError):
        app.bind("q2", "unit.other", "x", exchange_type="headers")


def test_event_handlers_get_a_group_queue_and_run_only_for_their_pattern():
    app = App("shop", broker="memory://")  # no delay bindings: only the event groups'
    seen = []

    @app.on("order.*")
    def on_order(topic, payload):
        seen.append(("order", topic))

    @app.on("#.created", group="audit")
    def on_created(topic, payload):
        seen.append(("audit", topic))

    @app.on("user.*")
    def on_user(topic, payload):
        seen.append(("user", topic))

    assert "events.shop" in app.queue_names and "events.audit" in app.queue_names
    assert sorted(b.routing_key for b in app.queue("events.shop").bindings) == ["order.*", "user.*"]
    app.tasks["events.shop"]("order.created", {})  # the group's dispatcher, as the worker runs it
    app.tasks["events.audit"]("order.created", {})
    app.tasks["events.shop"]("user.deleted", {})
    assert seen == [("order", "order.created"), ("audit", "order.created"), ("user", "user.deleted")]


def test_an_event_is_addressed_to_the_group_of_the_queue_it_arrived_on():
    event = TaskMessage(id="1", task=EVENT_TASK, args=("order.created", {}))
    assert address(event, "events.billing").task == "events.billing"
    plain = TaskMessage(id="2", task="tests.support.apps.add")
    assert address(plain, "events.billing") is plain
    assert address(event, "default") is event


def test_the_app_and_the_embedded_broker_match_topics_with_one_function():
    # Two implementations could disagree on an edge ("lazy.#" and "lazy"), and then a test
    # on the embedded broker would pass where RabbitMQ routes differently, or the reverse.
    import taskq.embedded.store
    import taskq.routing
    import taskq.topics

    assert taskq.routing.topic_matches is taskq.topics.topic_matches
    assert taskq.embedded.store.topic_matches is taskq.topics.topic_matches
