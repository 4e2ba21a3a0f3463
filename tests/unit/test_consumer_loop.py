"""taskq.consumer_loop, the one reconnecting loop, with scripted connections (no broker):
what is tested is the loop's own logic (backoff, its reset, stopping, who owns the
connection), not kombu's, so a fake connection of our own stands in for it."""

from __future__ import annotations

import threading
import time

import pytest

from taskq import consumer_loop
from taskq.consumer_loop import Lost


class Down(ConnectionError):
    """What a scripted connection raises: one of the loop's ``errors``."""


class ScriptedConnection:
    """``step``: "unreachable" (ensure_connection fails), "lost" (connects, consume fails), "stop"
    (connects, consume sets the stop flag and returns), "bug" (consume raises a non-connection error)."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.released = self.collected = False

    def ensure_connection(self, *, max_retries: int, reraise_as_library_errors: bool) -> ScriptedConnection:
        assert max_retries == 1
        if self.step == "unreachable":
            raise Down("refused")
        return self

    def release(self) -> None:
        self.released = True

    def collect(self) -> None:
        self.collected = True


class Script:
    """Hands out one ScriptedConnection per try and records what the loop told its callbacks."""

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.connections: list[ScriptedConnection] = []
        self.stop = threading.Event()
        self.waits_asked: list[int] = []
        self.connected: list[bool] = []
        self.lost: list[Lost] = []

    def connect(self) -> ScriptedConnection:
        connection = ScriptedConnection(self.steps.pop(0))
        self.connections.append(connection)
        return connection

    def consume(self, connection: ScriptedConnection) -> None:
        if connection.step == "lost":
            raise Down("connection reset")
        if connection.step == "bug":
            raise KeyError("a bug")
        self.stop.set()

    def backoff(self, failures: int) -> float:
        self.waits_asked.append(failures)
        return 0.0

    def run(self, **overrides: object) -> None:
        options: dict[str, object] = {
            "errors": (Down,), "should_stop": self.stop, "on_connected": self.connected.append,
            "on_lost": self.lost.append, "backoff": self.backoff,
        }
        options.update(overrides)
        options = {name: value for name, value in options.items() if value is not None}  # None: the loop's default
        consumer_loop.run(self.connect, self.consume, **options)  # type: ignore[arg-type]


def test_the_wait_grows_while_tries_fail_and_starts_over_after_a_connection_that_worked():
    script = Script(["unreachable", "unreachable", "lost", "unreachable", "stop"])
    script.run()
    assert script.steps == []
    assert script.waits_asked == [0, 1, 0, 1]
    assert [(lost.was_connected, lost.failures, str(lost.error)) for lost in script.lost] == [
        (False, 0, "refused"), (False, 1, "refused"), (True, 0, "connection reset"), (False, 1, "refused")]
    assert script.connected == [False, True]  # the second connection is a reconnection


def test_a_failed_connection_is_dropped_and_one_that_ends_cleanly_is_released():
    script = Script(["lost", "stop"])
    script.run()
    lost, stopped = script.connections
    assert (lost.collected, lost.released) == (True, False)  # no close handshake on a dead socket
    assert (stopped.collected, stopped.released) == (False, True)


def test_a_stop_flag_set_before_the_start_connects_nothing():
    script = Script(["stop"])
    script.stop.set()
    script.run()
    assert script.connections == []


@pytest.mark.parametrize("flag", ["event", "callable"])
def test_a_stop_during_the_wait_ends_it_at_once(flag):
    script = Script(["unreachable"])
    stopped = threading.Event()

    def stop_while_waiting(lost: Lost) -> None:
        stopped.set()  # told to stop just as the minute's wait begins

    started = time.monotonic()
    script.run(should_stop=stopped if flag == "event" else stopped.is_set, on_lost=stop_while_waiting,
               backoff=lambda failures: 60.0)
    assert time.monotonic() - started < 5  # far less than the wait it was given
    assert script.connections[0].collected


def test_an_error_that_is_not_a_connection_error_ends_the_loop_and_drops_the_connection():
    script = Script(["bug"])
    with pytest.raises(KeyError):
        script.run()
    assert script.connections[0].collected and script.lost == []


def test_a_callback_that_raises_ends_the_loop_with_its_error():
    script = Script(["unreachable", "stop"])

    def never_connected(lost: Lost) -> None:
        raise lost.error  # a listener whose first try failed: likely a wrong URL

    with pytest.raises(Down, match="refused"):
        script.run(on_lost=never_connected)
    assert script.steps == ["stop"]


def test_without_a_backoff_given_the_wait_is_the_reconnect_backoff():
    script = Script(["unreachable"])

    def lost_then_stop(lost: Lost) -> None:
        script.lost.append(lost)
        script.stop.set()

    script.run(backoff=None, on_lost=lost_then_stop)
    [lost] = script.lost
    assert 0.25 <= lost.pause <= 0.5  # settings.RECONNECT_BACKOFF_FIRST, jittered in its upper half


def test_nothing_else_in_taskq_reconnects_by_itself():
    # The one loop: a second one would be a second place for the backoff, its reset and the stop flag.
    from tests.support import ROOT

    waiting = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "taskq").rglob("*.py")
                     if "reconnect_backoff" in path.read_text())
    assert waiting == ["taskq/backoff.py", "taskq/consumer_loop.py"], waiting
