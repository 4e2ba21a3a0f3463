"""``.delay()``, ``.get()`` and ``close()`` through an outage: one retry budget for every step of a send.

The client reaches RabbitMQ through tests/support/tcp_proxy.py, which resets or blackholes the
client's connections; RabbitMQ itself is never touched. No worker runs: a published task
stays in its queue, where the broker shows it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any, Callable

import pytest
from kombu import Connection

from taskq import App, PublishError, ResultLost
from taskq.broker import RetryPolicy
from tests.support.brokers import queue_state
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.broker
GIVE_UP = 40  # seconds: far past the 10 s budget, far short of what an unbounded wait takes


class InThread:
    """Runs a call in a thread, so the test can act on the network while the call waits on it."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.took: float | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        started = time.monotonic()
        try:
            self.result = call()
        except BaseException as exc:  # handed to the test
            self.error = exc
        self.took = time.monotonic() - started

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def finish(self, timeout: float = GIVE_UP) -> InThread:
        wait_until(lambda: not self.running, timeout=timeout, what="the call to return")
        return self


@pytest.fixture
def proxy(broker_url: str):
    proxy = Proxy(broker_url)
    proxy.start()
    yield proxy
    proxy.restore()
    proxy.stop()


@pytest.fixture
def client(proxy: Proxy):
    """An app that reaches the broker only through the proxy."""
    app = App("outages", broker=proxy.url)
    yield app
    proxy.restore()  # what a blackhole holds back would only slow the close down
    app.close()


def echo_task(app: App, queue: str):
    return app.task(queue=queue, name=f"outages.echo.{queue}")(lambda value: value)


def result_lost(result) -> bool:
    try:
        result.get(timeout=0.05)
    except ResultLost:
        return True
    except TimeoutError:
        return False
    return False


def test_delay_rides_out_a_reset_outage_while_the_reply_listener_reopens(client, proxy, queue_name, amqp):
    echo = echo_task(client, queue_name)
    first = echo.delay(1)
    proxy.reset()
    wait_until(lambda: result_lost(first), what="the reply listener noticing its connection is gone")

    sending = InThread(lambda: echo.delay(2))
    # Heal only after the listener was refused three times: a send that gave up earlier fails here.
    wait_until(lambda: proxy.resets >= 3 or not sending.running, what="three refused attempts")
    proxy.restore()
    sending.finish()

    assert sending.error is None, f"delay() gave up after {proxy.resets} attempts: {sending.error}"
    assert queue_state(amqp, queue_name)[0] == 2  # both tasks, confirmed and queued
    print(f"\ndelay() rode out the reset: {proxy.resets} refused attempts, {sending.took:.1f} s")


def test_delay_over_a_reset_broker_spends_exactly_one_budget_of_attempts(client, proxy, queue_name):
    echo = echo_task(client, queue_name)
    client.broker.retry = RetryPolicy(interval_start=0.01, interval_max=0.05)  # the same 7 attempts, quickly
    proxy.reset()

    with pytest.raises(PublishError, match=r"to listen for results after \d+ attempts") as caught:
        echo.delay(1)

    attempts = int(re.search(r"after (\d+) attempts", str(caught.value)).group(1))
    assert attempts == client.broker.retry.max_retries + 1
    assert proxy.resets == attempts  # each attempt is one connection: no retry hidden inside kombu


def test_delay_over_a_blackhole_gives_up_at_the_deadline(client, proxy, queue_name):
    echo = echo_task(client, queue_name)
    # A confirm wait longer than the whole budget: the budget, not the step, must decide.
    client.broker.retry = RetryPolicy(confirm_timeout=60.0)
    echo.delay(1)
    proxy.blackhole()

    sending = InThread(lambda: echo.delay(2)).finish()

    assert isinstance(sending.error, PublishError), sending.error
    assert "did not confirm the publish" in str(sending.error)
    print(f"\nPublishError {sending.took:.1f} s into a blackhole (budget {client.broker.retry.deadline} s)")


def test_delay_to_a_new_queue_over_a_blackhole_gives_up_too(client, proxy, queue_name, broker_url):
    """The first send to a queue declares it: a wait py-amqp gives no timeout of its own."""
    echo_task(client, queue_name).delay(1)
    other_queue = f"test.{uuid.uuid4().hex[:12]}"
    other = echo_task(client, other_queue)
    proxy.blackhole()
    try:
        sending = InThread(lambda: other.delay(2)).finish()
    finally:
        proxy.restore()
        with Connection(broker_url) as connection:
            for name in (other_queue, other_queue + ".dead"):
                connection.channel().queue_delete(name)

    assert isinstance(sending.error, PublishError), sending.error
    print(f"\nPublishError {sending.took:.1f} s into a blackhole, declaring a new queue")


def test_delay_succeeds_when_a_blackhole_heals_inside_the_budget(client, proxy, queue_name, amqp):
    echo = echo_task(client, queue_name)
    echo.delay(1)
    proxy.blackhole()

    sending = InThread(lambda: echo.delay(2))
    wait_until(lambda: proxy.held > 0, what="the publish held back by the blackhole")
    proxy.restore()
    sending.finish()

    assert sending.error is None, sending.error
    assert queue_state(amqp, queue_name)[0] == 2


def test_get_over_a_blackhole_raises_timeout_error_at_its_timeout(client, proxy, queue_name):
    result = echo_task(client, queue_name).delay(1)
    proxy.blackhole()

    waiting = InThread(lambda: result.get(timeout=2)).finish()

    assert isinstance(waiting.error, TimeoutError), waiting.error


def test_close_over_a_blackhole_returns(proxy, queue_name):
    app = App("outages-close", broker=proxy.url)
    echo_task(app, queue_name).delay(1)
    proxy.blackhole()

    closing = InThread(app.close).finish()

    assert closing.error is None, closing.error
    print(f"\nclose() returned {closing.took:.1f} s into a blackhole")
