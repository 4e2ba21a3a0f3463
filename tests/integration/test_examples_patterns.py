"""The seed's messaging patterns as examples: pub/sub, direct routing, topics — on both brokers."""

from __future__ import annotations

import re

import pytest

from tests.support.examples import run_module

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def test_pubsub_both_subscribers_get_every_line(broker_url, tmp_path):
    out = run_module(["examples.pubsub"], broker_url, tmp_path)
    every = "lines [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] from"
    assert re.search(r"^file subscriber \(\S+taskq\.jsonl\): " + re.escape(every), out, re.MULTILINE), out
    assert re.search(r"^screen subscriber: " + re.escape(every), out, re.MULTILINE), out
    assert sorted(int(n) for n in re.findall(r"^\[screen\] pid \d+: handled n=(\d+)$", out, re.MULTILINE)) == list(range(10)), out
    assert "both subscribers received every line: True" in out


def test_routing_errors_to_the_file_everything_to_the_screen(broker_url, tmp_path):
    out = run_module(["examples.routing"], broker_url, tmp_path)
    screen = [line for line in out.splitlines() if line.startswith("[screen]")]
    assert sorted(screen) == sorted([
        "[screen] info: user 7 logged in", "[screen] warning: disk 81% full",
        "[screen] error: payment gateway timed out", "[screen] info: order 42 shipped",
        "[screen] error: cannot reach the mail server",
    ]), out
    file_lines = [line for line in out.splitlines() if line.startswith("[file] ") and "holds:" not in line]
    assert file_lines == ["[file] error: payment gateway timed out", "[file] error: cannot reach the mail server"], out
    assert "[sender] debug: 'cache hit ratio 0.93' matched no binding (Unroutable)" in out


def test_topics_table_of_keys_and_queues(broker_url, tmp_path):
    out = run_module(["examples.topics"], broker_url, tmp_path)
    table = dict(re.findall(r"^([a-z.]+\.[a-z.]+) +(\S.*)$", out, re.MULTILINE))
    assert table == {
        "quick.orange.rabbit": "orange, rabbit",
        "lazy.orange.elephant": "orange, rabbit",
        "quick.orange.fox": "orange",
        "lazy.brown.fox": "rabbit",
        "lazy.pink.rabbit": "rabbit",  # matches both of rabbit's bindings, queued there once
        "quick.brown.fox": "(none: Unroutable, returned to the sender)",
        "quick.orange.male.rabbit": "(none: Unroutable, returned to the sender)",
        "lazy.orange.male.rabbit": "rabbit",
    }, out
