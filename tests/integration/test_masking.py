"""No password in any output, end to end: each output surface (worker banner and reconnect
lines, dashboard ``/api/state``, ``taskq status`` errors, ``PublishError``) gets a two-URL
list whose second URL carries a password found nowhere else, and what came out is grepped
for it. ``mask_url`` itself is tested in tests/unit/test_masking.py.
"""

from __future__ import annotations

import json
import traceback
import urllib.request
from urllib.parse import quote

import pytest

from taskq import App, PublishError
from taskq.broker import RetryPolicy
from tests.support.cli_helpers import taskq
from tests.support.dashboard import Dashboard, dashboard_deps  # noqa: F401 (a fixture)
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import wait_until

SECRET = "Zx9SECRET"  # in every password below, and in no host, user or vhost
DEAD = "amqp://guest:{password}@127.0.0.1:1//"  # nothing listens on port 1


def two_urls(first: str) -> str:
    """``first`` (reachable), then a dead URL whose password is the one that must never show."""
    return f"{first};{DEAD.format(password=quote(SECRET + '/?#@%', safe=''))}"


def test_publish_error_texts_show_no_password():
    app = App("masking", broker=f"{DEAD.format(password=SECRET + '1')};{DEAD.format(password=SECRET + '2')}")
    app.broker.retry = RetryPolicy(max_retries=1, interval_start=0.01, interval_max=0.01)
    with_result = app.task(name="masking.with_result", queue="test.masking")(lambda: None)
    without = app.task(name="masking.without", queue="test.masking", ignore_result=True)(lambda: None)
    try:
        for task in (with_result, without):
            with pytest.raises(PublishError) as caught:
                task.delay()
            text = "".join(traceback.format_exception(caught.value))
            assert SECRET not in text, text
            assert str(caught.value).count(":**@") == 2
    finally:
        app.close()


def test_taskq_status_error_shows_no_password():
    result = taskq("status", "-A", "tests.support.apps:app", "--broker", two_urls(DEAD.format(password=SECRET)),
                   broker_url="amqp://unused//")
    assert result.returncode != 0
    assert result.stderr.startswith("Error: broker at "), result.stderr
    assert SECRET not in result.stdout + result.stderr, result.stderr
    assert result.stderr.count(":**@") == 2


def test_worker_banner_and_reconnect_lines_show_no_password(broker_url, queue_name, start_worker):
    proxy = Proxy(broker_url)  # the worker's way to the broker, to cut so it reconnects
    proxy.start()
    try:
        worker = start_worker([queue_name], 1, extra_args=("--broker", two_urls(proxy.url)))
        wait_until(lambda: "broker:      amqp://guest:**@" in worker.log(), what="the banner")
        proxy.reset()
        wait_until(lambda: "broker connection lost, reconnecting" in worker.log(), what="a reconnect line")
        proxy.restore()
    finally:
        proxy.stop()
    log = worker.log()
    assert SECRET not in log, log
    reconnecting = [json.loads(line) for line in log.splitlines() if "reconnecting" in line and line.startswith("{")]
    assert reconnecting and all(record["broker"].count(":**@") == 2 for record in reconnecting)


def test_dashboard_state_shows_no_password(dashboard_deps, broker_url, queue_name, tmp_path):  # noqa: F811
    dashboard = Dashboard(["-A", "tests.support.apps:app", "-Q", queue_name, "--broker", two_urls(broker_url)],
                          tmp_path / "dashboard.log")
    try:
        with urllib.request.urlopen(dashboard.url.rstrip("/") + "/api/state", timeout=10) as response:
            state = response.read().decode()
    finally:
        dashboard.stop()
    assert SECRET not in state and SECRET not in dashboard.log()
    assert json.loads(state)["broker_url"].count(":**@") == 2
