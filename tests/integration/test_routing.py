"""Tasks through named direct and topic exchanges, and user events across two apps, on the real broker."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from taskq import Unroutable
from tests.support.cli_helpers import delete_prefixed_entities, listeners, rabbitmqctl_queues  # noqa: F401 (fixtures)
from tests.support.event_apps import PREFIX, animal, billing, routed, severity, shop
from tests.support.waiting import wait_until

pytestmark = pytest.mark.broker
ORANGE, RABBIT = f"{PREFIX}.orange", f"{PREFIX}.rabbit"
ERRORS, ALL_SEVERITIES = f"{PREFIX}.errors", f"{PREFIX}.all-severities"


@pytest.fixture
def apps(broker_url: str):
    for app in (routed, shop, billing):
        app.use_broker(broker_url)
    yield
    for app in (routed, shop, billing):
        app.close()


def lines(path) -> Counter:
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def settled(queues: list[str]):
    """True once the broker holds nothing, ready or unacked, for these queues."""
    counts = rabbitmqctl_queues()
    return all(counts[name][:2] == (0, 0) for name in queues)


def test_topic_bindings_route_each_key_to_every_matching_queue_once(apps, start_worker, tmp_path):
    start_worker([ORANGE, RABBIT], 1, app="tests.support.event_apps:routed")
    path = tmp_path / "animals.txt"
    for key in ("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox", "lazy.pink.rabbit"):
        animal.apply_async((str(path), key), routing_key=key)
    with pytest.raises(Unroutable):
        animal.apply_async((str(path), "quick.brown.fox"), routing_key="quick.brown.fox")
    expected = Counter({
        f"quick.orange.rabbit {ORANGE}": 1, f"quick.orange.rabbit {RABBIT}": 1,
        f"lazy.orange.elephant {ORANGE}": 1, f"lazy.orange.elephant {RABBIT}": 1,
        f"quick.orange.fox {ORANGE}": 1,
        f"lazy.brown.fox {RABBIT}": 1,
        f"lazy.pink.rabbit {RABBIT}": 1,  # matches two of the queue's bindings, delivered once
    })
    wait_until(lambda: lines(path) == expected, what="each key in its queues")
    wait_until(lambda: settled([ORANGE, RABBIT]), what="queues drained")
    assert lines(path) == expected


def test_the_default_routing_key_and_a_direct_exchange(apps, start_worker, tmp_path):
    start_worker([ERRORS, ALL_SEVERITIES], 1, app="tests.support.event_apps:routed")
    path = tmp_path / "severity.txt"
    animal.apply_async((str(path), "default-key"))  # the decorator's key: quick.orange.rabbit
    severity.apply_async((str(path), "error"), routing_key="error")
    severity.apply_async((str(path), "info"), routing_key="info")
    with pytest.raises(Unroutable):
        severity.apply_async((str(path), "warning"), routing_key="warning")  # direct: no pattern matches
    expected = Counter({f"error {ERRORS}": 1, f"error {ALL_SEVERITIES}": 1, f"info {ALL_SEVERITIES}": 1})
    wait_until(lambda: lines(path) == expected, what="severities routed")
    wait_until(lambda: settled([ERRORS, ALL_SEVERITIES]), what="queues drained")
    assert lines(path) == expected
    assert rabbitmqctl_queues()[ORANGE][0] >= 1  # the decorator's key went to the topic queues


def test_two_apps_integrated_by_events(apps, start_worker, listeners, tmp_path):
    billing_queue, audit_queue = f"events.{PREFIX}-billing", f"events.{PREFIX}-audit"
    start_worker([billing_queue, audit_queue], 2, app="tests.support.event_apps:billing")
    watcher = listeners("events", f"{PREFIX}.order.*", "--json", name="events")
    path = tmp_path / "integration.txt"
    order = uuid.uuid4().hex[:8]
    shop.publish(f"{PREFIX}.order.created", {"path": str(path), "order": order})
    shop.publish(f"{PREFIX}.order.paid", {"path": str(path), "order": order})
    shop.publish(f"{PREFIX}.user.created", {"path": str(path), "order": order})
    shop.publish(f"{PREFIX}.nobody.listens", {"path": str(path), "order": order})  # no group: dropped, no error
    expected = Counter({
        f"billing {PREFIX}.order.created {order}": 1,
        f"billing {PREFIX}.order.paid {order}": 1,
        f"audit {PREFIX}.order.created {order}": 1,
        f"audit {PREFIX}.user.created {order}": 1,
    })
    wait_until(lambda: lines(path) == expected, what="each group's handlers")
    wait_until(lambda: len(watcher.json_lines()) >= 2, what="taskq events to print")
    wait_until(lambda: settled([billing_queue, audit_queue]), what="queues drained")
    assert lines(path) == expected
    watcher.stop()
    printed = watcher.json_lines()
    assert [event["topic"] for event in printed] == [f"{PREFIX}.order.created", f"{PREFIX}.order.paid"]
    assert printed[0]["payload"] == {"path": str(path), "order": order}


def test_group_queues_keep_events_while_their_workers_are_down(apps, start_worker, tmp_path):
    billing_queue = f"events.{PREFIX}-billing"
    start_worker([billing_queue], 1, app="tests.support.event_apps:billing").stop()
    path = tmp_path / "later.txt"
    shop.publish(f"{PREFIX}.order.created", {"path": str(path), "order": "kept"})
    wait_until(lambda: rabbitmqctl_queues()[billing_queue][0] == 1, what="the event to wait in its durable queue")
    start_worker([billing_queue], 1, app="tests.support.event_apps:billing")
    wait_until(lambda: lines(path) == Counter({f"billing {PREFIX}.order.created kept": 1}), what="the kept event handled")
