"""A worker child cut off from the real broker (through a TCP proxy, RabbitMQ itself untouched)
reconnects through taskq.consumer_loop: its waits grow while the broker stays away, it runs
tasks again once it is back, and the next outage starts from the first wait again."""

from __future__ import annotations

import json

from tests.support.apps import add
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import wait_until

LOST = "broker connection lost, reconnecting"


def reconnect_waits(log: str) -> list[float]:
    """The ``retry_in`` of each reconnect line, in order."""
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [record["retry_in"] for record in records if record.get("event") == LOST]


def test_a_cut_off_worker_backs_off_comes_back_and_starts_over(app, broker_url, queue_name, start_worker):
    proxy = Proxy(broker_url)  # the worker's way to the broker; the test's own client goes direct
    proxy.start()
    try:
        worker = start_worker([queue_name], 1, extra_args=("--broker", proxy.url))
        assert add.apply_async((1, 2), queue=queue_name).get(timeout=20) == 3

        proxy.reset()  # every connection, and each new one, reset: the broker stays away
        wait_until(lambda: len(reconnect_waits(worker.log())) >= 3, what="three failed tries")
        first, _, third = reconnect_waits(worker.log())[:3]
        # Jittered in the upper half of 0.5 s doubling: the first at most 0.5, the third at least 1.
        assert first <= 0.5 < 1.0 <= third, reconnect_waits(worker.log())

        proxy.restore()
        assert add.apply_async((2, 3), queue=queue_name).get(timeout=30) == 5  # consuming again
        assert worker.process.poll() is None

        seen = len(reconnect_waits(worker.log()))
        proxy.reset()  # a second outage, after a connection that worked
        wait_until(lambda: len(reconnect_waits(worker.log())) > seen, what="the second outage's first try")
        assert reconnect_waits(worker.log())[seen] <= 0.5  # started over from the first wait
        proxy.restore()
        assert add.apply_async((3, 4), queue=queue_name).get(timeout=30) == 7
    finally:
        proxy.stop()
