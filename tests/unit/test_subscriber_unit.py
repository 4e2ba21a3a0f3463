"""``subscriber.follow``, the listener loop behind taskq logs and taskq events, with a scripted
subscription and connections (no broker): what it says and does when the broker goes away."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from taskq.subscriber import follow


class ScriptedConnection:
    """Connects unless the step is "unreachable"; a connection of the consumer loop, no socket."""

    def __init__(self, step: str) -> None:
        self.step = step

    def ensure_connection(self, **options):
        if self.step == "unreachable":
            raise ConnectionError("refused")
        return self

    def release(self) -> None:
        pass

    def collect(self) -> None:
        pass


class ScriptedSubscription:
    """Each connection does the next step: "ready" (listens, then returns when told to stop),
    "ready-then-lost", or "unreachable"."""

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.broker = SimpleNamespace(connection_errors=(ConnectionError,))

    def connect(self):
        return ScriptedConnection(self.steps.pop(0))

    def consume(self, connection, on_message, *, should_stop, on_ready):
        on_ready(f"queue-{len(self.steps)}")
        if connection.step == "ready-then-lost":
            raise ConnectionError("connection reset")


def test_a_broker_unreachable_at_the_start_is_raised():
    said: list[str] = []
    with pytest.raises(ConnectionError):
        follow(ScriptedSubscription(["unreachable"]), print, lambda: False,
               on_ready=said.append, on_reconnected=said.append, on_lost=lambda exc: said.append("lost"))
    assert said == []


def test_a_lost_broker_is_said_once_per_outage_and_the_follower_listens_again():
    said: list[str] = []
    subscription = ScriptedSubscription(["ready-then-lost", "unreachable", "unreachable", "ready"])
    follow(subscription, print, lambda: False,
           on_ready=lambda queue: said.append(f"ready {queue}"),
           on_reconnected=lambda queue: said.append(f"again {queue}"),
           on_lost=lambda exc: said.append(f"lost {exc}"))
    assert said == ["ready queue-3", "lost connection reset", "again queue-0"]
    assert subscription.steps == []
