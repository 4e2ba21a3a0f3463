"""``taskq status`` reports the app's own broker, not whichever RabbitMQ node ``rabbitmqctl`` finds first."""

from __future__ import annotations

import json
import uuid

import pytest
from kombu import Connection

from tests.support.cli_helpers import taskq
from tests.support.tcp_proxy import Proxy

pytestmark = pytest.mark.broker
APP = "tests.support.event_apps:app"


def fill(broker_url: str, queue: str, messages: int) -> None:
    with Connection(broker_url) as connection:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=False, auto_delete=False)
        for i in range(messages):
            channel.basic_publish(channel.prepare_message(f"m{i}".encode()), exchange="", routing_key=queue)


def drop(broker_url: str, queue: str) -> None:
    with Connection(broker_url) as connection:
        connection.channel().queue_delete(queue)


def status_json(broker_url: str, queue: str) -> dict:
    result = taskq("status", "-A", APP, "-Q", queue, "--wait", "0.2", "--json", broker_url=broker_url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def counts(report: dict, queue: str) -> tuple:
    [row] = [q for q in report["queues"] if q["name"] == queue]
    return row["ready"], row["unacked"], row["consumers"]


def test_status_on_a_private_node_reports_that_node_not_the_default_one(private_node, broker_url):
    # One queue name on two brokers, with different numbers: only the app's broker's may be printed.
    queue = f"test.status.{uuid.uuid4().hex[:8]}"
    fill(private_node.url, queue, 2)
    fill(broker_url, queue, 5)
    try:
        report = status_json(private_node.url, queue)
        assert report["counts_from"] == "rabbitmqctl", report["notes"]
        assert counts(report, queue) == (2, 0, 0)
        truth = private_node.list_queues("messages_ready", "messages_unacknowledged", "consumers")[queue]
        assert (truth["messages_ready"], truth["messages_unacknowledged"], truth["consumers"]) == (2, 0, 0)
        # The default node's own report still reads the default node.
        assert counts(status_json(broker_url, queue), queue) == (5, 0, 0)
    finally:
        drop(private_node.url, queue)
        drop(broker_url, queue)


def test_status_falls_back_to_amqp_when_no_node_is_proven_to_serve_the_port(broker_url):
    """Behind a TCP forwarder the port belongs to no RabbitMQ node: rabbitmqctl can't be trusted there."""
    queue = f"test.status.{uuid.uuid4().hex[:8]}"
    fill(broker_url, queue, 3)
    proxy = Proxy(broker_url)
    proxy.start()
    try:
        report = status_json(proxy.url, queue)
        assert report["counts_from"].startswith("amqp"), report
        assert counts(report, queue) == (3, 0, 0)
    finally:
        proxy.stop()
        drop(broker_url, queue)
