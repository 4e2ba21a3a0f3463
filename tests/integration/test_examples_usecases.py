"""The seed's use cases as examples: async logging, the flash sale, clinic to ward — on both brokers."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.support.examples import run_module

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def test_async_logging_queue_lowers_latency_and_loses_no_line(broker_url, tmp_path):
    out = run_module(["examples.async_logging", "--requests", "160", "--clients", "8"], broker_url, tmp_path)
    rows = {name.strip(): (float(p50), float(p95))
            for name, p50, p95 in re.findall(r"^(synchronous log write|queued \(taskq\)) +([\d.]+) +([\d.]+)$", out, re.MULTILINE)}
    assert set(rows) == {"synchronous log write", "queued (taskq)"}, out
    assert rows["queued (taskq)"][0] < rows["synchronous log write"][0], out
    assert "synchronous: 168 lines written by the request handlers (with 8 warm-up)" in out, out
    assert "queued: 168 lines written by the log-writer worker (with 8 warm-up)" in out, out


def test_flash_sale_sells_exactly_the_stock(broker_url, tmp_path):
    chart = tmp_path / "depth.png"
    out = run_module(["examples.flash_sale", "--chart", str(chart)], broker_url, tmp_path)
    assert "answers: bought 100, sold out 4900, unanswered 0" in out
    assert "orders in the database: 100; stock left: 0" in out
    assert "redelivered 200 attempts: same answers True; orders still 100" in out
    peak, rate, overall = re.search(r"peak queue depth: (\d+) messages at [\d.]+ s; drain rate: (\d+) attempts/s "
                                    r"from the peak to empty, (\d+) attempts/s overall", out).groups()
    assert int(peak) > 0 and int(rate) > 0 and int(overall) > 0
    if importlib.util.find_spec("matplotlib"):
        assert f"chart of queue depth over time: {chart}" in out
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "chart skipped" in out


def test_clinic_registrations_appear_in_the_ward(broker_url, tmp_path):
    out = run_module(["examples.clinic_to_ward"], broker_url, tmp_path)
    clinic = re.findall(r"^  clinic patient \| (\d+) \| ([^|]+) \|", out, re.MULTILINE)
    ward = re.findall(r"^  ward admission \| (\d+) \| ([^|]+) \|", out, re.MULTILINE)
    assert clinic == [("1", "Li Lei"), ("2", "Han Meimei"), ("3", "Wang Fang")]
    assert ward == clinic
