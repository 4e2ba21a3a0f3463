"""Failover on a real 3-node RabbitMQ cluster: quorum queues and a ``;`` list of node URLs.

The node the workers are connected to, which is also the queue's leader, is lost in the
middle of a 2,000-task drain: once stopped cleanly, once killed with ``kill -9``. Every
task must run (0 lost); duplicates are counted and must stay within what
docs/guarantees.md promises; the workers must carry on, on the surviving nodes.
"""

from __future__ import annotations

import collections
import re

import pytest

from tests.support import ROOT
from tests.support.brokers import RabbitNode
from tests.support.drain import TASKS, Drain

CONCURRENCY = 4


@pytest.fixture(scope="module")
def broker_url(rabbit_cluster: list[RabbitNode]) -> str:
    """Every node, in order: a client connects to the first that answers."""
    return ";".join(node.url for node in rabbit_cluster)


@pytest.fixture
def cluster_app(broker_url: str):
    from tests.support.cluster_app import app

    app.use_broker(broker_url)
    yield app
    app.close()


def connection_ports(node: RabbitNode) -> collections.Counter:
    """How many client connections each node's AMQP port holds, cluster-wide."""
    return collections.Counter(row["port"] for row in node.ctl_json("list_connections", "port"))


def test_the_deployment_doc_describes_this_test_setup():
    """docs/deployment.md's cluster section quotes this file: the setup it describes must be this one."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text.split("## Run on a RabbitMQ cluster", 1)[1].split("\n## ", 1)[0]
    assert 'App("shop", queue_type="quorum")' in section
    from tests.support.cluster_app import app

    assert app.queue_type == "quorum"
    assert len(re.findall(r"amqp://[^;' ]+", section.split("TASKQ_BROKER_URL=", 1)[1].split("\n", 1)[0])) == 3
    assert "tests/integration/test_cluster.py" in section and f"{TASKS:,}-task drain" in section and f"{CONCURRENCY} children" in section
    assert "| stopped" in section and "| killed (`kill -9`" in section


@pytest.mark.cluster
@pytest.mark.broker
@pytest.mark.parametrize("loss", ["stop", "kill -9"])
def test_a_drain_loses_nothing_when_the_workers_node_and_queue_leader_goes(
    loss, rabbit_cluster, cluster_app, queue_name, start_worker, tmp_path
):
    target, survivor = rabbit_cluster[0], rabbit_cluster[1]
    worker = start_worker([queue_name], concurrency=CONCURRENCY, app="tests.support.cluster_app:app")
    # The first URL is the target's: the workers are there, and so the leader (client-local placement).
    assert set(connection_ports(survivor)) == {target.port}
    assert survivor.list_queues("leader")[queue_name]["leader"] == target.name

    drain = Drain(cluster_app, queue_name, tmp_path / "executions")
    try:
        target.stop() if loss == "stop" else target.kill9()
        drain.wait_all_run()
    finally:
        target.start()  # the cluster whole again, for the next loss and the session's teardown
    report = drain.report()
    print(f"\ncluster, {loss} of the workers' node and queue leader: {report}")
    assert report.lost == 0
    assert worker.process.poll() is None and "child died" not in worker.log()
    assert set(connection_ports(survivor)) - {target.port}, "the workers reconnected to a surviving node"
    # docs/guarantees.md: a clean stop reruns at most the tasks running then (one per child);
    # a crash also those whose acks the lost leader had not yet replicated.
    assert report.duplicates <= (CONCURRENCY if loss == "stop" else report.crash_bound(CONCURRENCY))
