"""The broadcaster's unheard spells for log lines, without a broker: what is held, probed, let go and sent.

A stand-in channel records what would be published and hands ``basic.return`` to the
broadcaster's handler, as py-amqp would when no queue is bound.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from taskq import events, topology


class Channel:
    """Just what the broadcaster uses of a py-amqp channel."""

    def __init__(self) -> None:
        self.events: dict[str, set] = {}
        self.published: list[tuple[str, str, bytes]] = []

    def exchange_declare(self, *args, **kwargs) -> None:
        pass

    def prepare_message(self, body, priority, content_type, content_encoding, headers, properties):
        return SimpleNamespace(body=body, properties=properties)

    def basic_publish(self, message, exchange, routing_key, mandatory=False):
        self.published.append((exchange, routing_key, message))

    def nobody_bound(self, index: int = -1) -> None:
        """Return the message published ``index``-th (the last by default), as the broker would."""
        exchange, routing_key, message = self.published[index]
        for handler in self.events.get("basic_return", ()):
            handler(None, exchange, routing_key, message)

    def log_messages(self) -> list[list[str]]:
        """Each message on the logs fanout, as the events of its lines ([] for a probe)."""
        return [[json.loads(line)["event"] for line in message.body.splitlines()]
                for exchange, _, message in self.published if exchange == topology.LOGS_EXCHANGE]


class Connection:
    def __init__(self) -> None:
        self.opened = Channel()

    def channel(self) -> Channel:
        return self.opened


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: now[0])
    return now


def started(capacity: int = 100) -> tuple[events.Broadcaster, Channel]:
    broadcaster = events.Broadcaster("shop", ["orders"], capacity=capacity, flush_interval=0.1)
    connection = Connection()
    broadcaster.attach(connection)
    return broadcaster, connection.opened


def log(broadcaster: events.Broadcaster, *names: str) -> None:
    for name in names:
        broadcaster.log_processor(None, "info", {"event": name})


def test_a_returned_probe_lets_go_only_the_lines_logged_before_it(clock):
    broadcaster, channel = started()
    log(broadcaster, "heard")
    broadcaster.flush()
    first_batch = len(channel.published) - 1
    channel.nobody_bound()  # that batch came back: an unheard spell

    log(broadcaster, "in the spell")
    broadcaster.flush()
    clock[0] += events.UNHEARD_INTERVAL
    log(broadcaster, "at its end")
    broadcaster.flush()  # the spell is over: a probe goes out, the lines stay held
    log(broadcaster, "after the probe")
    broadcaster.flush()
    assert channel.log_messages() == [["heard"], []]

    channel.nobody_bound(first_batch)  # an old batch, back late (a second copy): no proof about the held lines
    assert broadcaster.unheard == 0
    channel.nobody_bound()  # the probe came back
    assert broadcaster.unheard == 2  # the two logged before it; not the one after

    clock[0] += events.UNHEARD_INTERVAL
    broadcaster.flush()  # a second probe, and this one isn't returned: somebody listens
    clock[0] += 1.0  # past the probe's grace
    log(broadcaster, "now")
    broadcaster.flush()
    assert channel.log_messages() == [["heard"], [], [], ["after the probe", "now"]]
    seqs = [json.loads(line)["seq"] for line in channel.published[-1][2].body.splitlines()]
    assert seqs == [4, 5]  # numbered in order: the listener sees no gap after its first line


def test_held_lines_are_bounded_and_the_overflow_is_counted_and_a_clean_stop_sends_the_rest(clock):
    broadcaster, channel = started(capacity=2)
    log(broadcaster, "heard")
    broadcaster.flush()
    channel.nobody_bound()
    for name in ("one", "two", "three"):
        log(broadcaster, name)
        broadcaster.flush()
    assert broadcaster.dropped == 1  # the newest: a gap the listener can count
    broadcaster.detach()
    assert channel.log_messages() == [["heard"], ["one", "two"]]
