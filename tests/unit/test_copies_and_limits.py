"""Pure pieces of the worker's reliability: copy headers, expiry, deadlines, the soft-limit guard."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from freezegun import freeze_time

from taskq import SoftTimeLimitExceeded, copies
from taskq.message import Reply, TaskMessage, decode_task
from taskq.task import expires_at
from taskq.worker.limits import Deadlines, TaskThreadGuard

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.timezone.utc)
BROKER_HEADERS = {"x-death": [{"queue": "q", "reason": "expired"}], "x-first-death-queue": "q", "x-delivery-count": 2}


def test_resend_keeps_foreign_headers_and_drops_the_brokers():
    message = TaskMessage(id="t1", task="a.b", attempts=2, eta=123.0)
    headers = copies.resend_headers({**BROKER_HEADERS, "trace": "abc", "eta": 1.0, "attempts": 1}, message)
    assert headers == {"trace": "abc", "task": "a.b", "id": "t1", "attempts": 2, "eta": 123.0}


def test_resend_without_eta_drops_the_old_one():
    headers = copies.resend_headers({"eta": 1.0, "expires_at": 9.0}, TaskMessage(id="t", task="x"))
    assert "eta" not in headers and "expires_at" not in headers


def test_dead_letter_headers_describe_the_failure_and_are_bounded():
    failure = Reply(task_id="t", ok=False, exc_type="ValueError", exc_message="m" * 5000, traceback="T" * 20000)
    headers = copies.dead_letter_headers(
        {**BROKER_HEADERS, "task": "a.b", "id": "t"}, reason="failed", detail="d", queue="q", attempts=3, failure=failure
    )
    assert headers["reason"] == "failed" and headers["original_queue"] == "q" and headers["attempts"] == 3
    assert headers["exc_type"] == "ValueError"
    assert len(headers["traceback"]) == copies.MAX_TRACEBACK and len(headers["exc_message"]) == copies.MAX_MESSAGE
    assert not any(key.startswith("x-") for key in headers)


def test_replay_headers_start_afresh():
    dead = copies.dead_letter_headers({"task": "a", "id": "t", "attempts": 2, "eta": 5.0}, reason="failed", detail="d",
                                      queue="q", attempts=3)
    assert copies.replay_headers({**dead, **BROKER_HEADERS}) == {"task": "a", "id": "t", "attempts": 0}


@freeze_time(NOW)
def test_expiry_is_checked_against_the_wall_clock():
    deadline = expires_at(30)
    assert deadline == NOW.timestamp() + 30
    assert expires_at(NOW + dt.timedelta(minutes=1)) == NOW.timestamp() + 60
    message = TaskMessage(id="t", task="x", expires_at=deadline)
    assert not message.is_expired()
    with freeze_time(NOW + dt.timedelta(seconds=31)):
        assert message.is_expired()


def test_eta_travels_in_a_header():
    message = TaskMessage(id="t", task="x", eta=1234.5)
    decoded = decode_task(message.body(), "application/x-msgpack", message.headers(), {})
    assert decoded.eta == 1234.5


def test_deadlines_bound_the_main_threads_waits():
    deadlines = Deadlines.start(soft_limit=2.0, hard_limit=5.0, now=100.0)
    assert (deadlines.soft, deadlines.hard) == (102.0, 105.0)
    assert deadlines.wait_time(tick=1.0, soft_fired=False, now=100.0) == 1.0
    assert deadlines.wait_time(tick=1.0, soft_fired=False, now=101.5) == pytest.approx(0.5)
    assert deadlines.wait_time(tick=1.0, soft_fired=True, now=104.8) == pytest.approx(0.2)
    assert deadlines.wait_time(tick=1.0, soft_fired=True, now=106.0) == 0.0
    assert Deadlines.start(None, None, now=0.0).wait_time(tick=1.0, soft_fired=False, now=50.0) == 1.0


def test_guard_raises_in_the_task_thread_only_while_it_runs():
    guard = TaskThreadGuard()
    assert not guard.interrupt()  # nothing running yet
    inside = threading.Event()
    outcome: list[str] = []

    def task() -> None:
        guard.enter()
        try:
            inside.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.001)
            outcome.append("not interrupted")
        except SoftTimeLimitExceeded:
            outcome.append("interrupted")
        finally:
            guard.leave()
        time.sleep(0.05)  # past leave(): must not be interrupted any more
        outcome.append("after")

    thread = threading.Thread(target=task)
    thread.start()
    assert inside.wait(5)
    assert guard.interrupt()
    assert not guard.interrupt()  # once only
    thread.join(5)
    assert outcome == ["interrupted", "after"]


def test_a_broker_dead_letter_is_described_from_x_death():
    from types import SimpleNamespace

    from taskq.dead import DeadLetter

    message = SimpleNamespace(
        headers={"task": "a.crash", "id": "t9", "x-first-death-queue": "orders",
                 "x-death": [{"queue": "orders", "reason": "delivery_limit", "count": 1}]},
        properties={},
    )
    letter = DeadLetter.from_message(message, "orders")
    assert (letter.task_id, letter.reason, letter.original_queue) == ("t9", "delivery_limit", "orders")
    bare = DeadLetter.from_message(SimpleNamespace(headers={}, properties={"correlation_id": "c"}), "eu.orders")
    assert (bare.task_id, bare.reason, bare.original_queue) == ("c", "?", "eu.orders")
