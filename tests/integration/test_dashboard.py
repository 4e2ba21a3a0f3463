"""``taskq dashboard`` end to end: a real worker, the real broker, the page in headless Chromium.

The dashboard reaches RabbitMQ through a small TCP proxy in this test, so the test can take
"the broker" away from the dashboard (and give it back) without touching the shared broker.

Chromium comes from Debian (``apt-get install chromium chromium-driver``); nothing here may
download a browser, so the driver's path is given and Selenium Manager is never run. Under
CI=true a missing browser fails the test instead of skipping it.

``TASKQ_DASHBOARD_SCREENSHOT=docs/dashboard.png`` also saves the page, as docs/dashboard.md shows it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from taskq.errors import TaskError
from tests.support import ROOT
from tests.support.brokers import queue_state
from tests.support.cli_helpers import FAST_HEARTBEATS
from tests.support.dashboard import Dashboard, dashboard_deps, require  # noqa: F401 (a fixture)
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.broker
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20  # seconds any one page condition may take


# -- the pieces: the dashboard process, the browser ---------------------------------------------


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    require(f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)" if missing else None)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require("selenium is not installed (pip install -e '.[test]')")
    # Never let Selenium Manager run (it would download a browser): the driver path is explicit,
    # and should anything still look for the manager, it finds one that fails at once.
    monkeypatch.setenv("SE_MANAGER_PATH", "/bin/false")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


# -- the page --------------------------------------------------------------------------------------


def text_of(driver, selector: str) -> str:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.CSS_SELECTOR, selector).get_attribute("textContent") or ""
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def page_shows(driver, selector: str, expected: str, *, exact: bool = False) -> None:
    """Wait until the element's text is (or contains) ``expected``; fail with what it showed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def holds(_) -> bool:
        text = text_of(driver, selector)
        return text.strip() == expected if exact else expected in text

    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.1).until(holds)
    except TimeoutException:
        raise AssertionError(f"{selector} never showed {expected!r}; it shows {text_of(driver, selector)!r}") from None


def page_lacks(driver, selector: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: not d.find_elements(By.CSS_SELECTOR, selector))


def click(driver, selector: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT, poll_frequency=0.1).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, selector))
    ).click()


def visible_text(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.CSS_SELECTOR, selector)
    return element.text if element.is_displayed() else ""


def post(base_url: str, path: str, body, *, form: bool = False) -> tuple[int, dict]:
    """POST to the dashboard as a script would (no Origin, the marker header); (status, JSON answer)."""
    data = (body if form else json.dumps(body)).encode()
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    headers = {"Content-Type": content_type, "X-Taskq-Dashboard": "1"}
    request = urllib.request.Request(base_url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_the_page_shows_queues_workers_failures_and_logs_and_its_actions_work(
    dashboard_deps, browser, app, amqp, broker_url, queue_name, start_worker, tmp_path
):
    from tests.support.apps import add, fail

    worker = start_worker([queue_name], 1, extra_env=FAST_HEARTBEATS)
    [child_pid] = worker.child_pids()
    proxy = Proxy(broker_url)
    proxy.start()
    dashboard = Dashboard(["-A", "tests.support.apps:app", "-Q", queue_name, "--broker", proxy.url], tmp_path / "dashboard.log")
    try:
        browser.get(dashboard.url)
        page_shows(browser, "#broker-state", "broker: up", exact=True)
        page_shows(browser, f'tr[data-queue="{queue_name}"] .consumers', "1", exact=True)
        page_shows(browser, f'tr[data-pid="{child_pid}"] .current', "idle", exact=True)

        added = [add.apply_async((n, 1), queue=queue_name) for n in range(3)]
        failed = fail.apply_async(("boom from the dashboard test",), queue=queue_name)
        assert [result.get(timeout=20) for result in added] == [1, 2, 3]
        with pytest.raises(TaskError):
            failed.get(timeout=20)

        failure = f'.failure[data-task-id="{failed.id}"]'
        page_shows(browser, f"{failure} .exc", "ValueError: boom from the dashboard test", exact=True)
        page_shows(browser, f"{failure} pre.traceback", "Traceback (most recent call last)")
        page_shows(browser, f"{failure} pre.traceback", "raise ValueError(message)")
        page_shows(browser, f'tr[data-queue="{queue_name}"] .dead', "1", exact=True)
        page_shows(browser, f'tr[data-queue="{queue_name}"] .ready', "0", exact=True)
        page_shows(browser, f'tr[data-pid="{child_pid}"] .done', "4", exact=True)
        page_shows(browser, f'tr[data-pid="{child_pid}"] .failed', "1", exact=True)
        page_shows(browser, "#throughput-summary", "last minute: 3 succeeded, 1 failed", exact=True)
        page_shows(browser, "#logs", f"task_id={added[2].id}")
        page_shows(browser, "#logs", "task succeeded")
        page_shows(browser, "#logs", "message dead-lettered")
        if os.environ.get("TASKQ_DASHBOARD_SCREENSHOT"):
            browser.save_screenshot(os.environ["TASKQ_DASHBOARD_SCREENSHOT"])

        # With no worker the replayed message stays where the broker can count it.
        worker.stop()
        page_lacks(browser, f'tr[data-pid="{child_pid}"]')  # its worker.offline, heard
        page_shows(browser, f'tr[data-queue="{queue_name}"] .consumers', "0", exact=True)
        click(browser, f"{failure} button.replay-one")
        page_shows(browser, "#action-message", f"replayed 1 dead letter(s) to {queue_name}")
        page_lacks(browser, failure)
        assert queue_state(amqp, queue_name)[0] == 1 and queue_state(amqp, queue_name + ".dead")[0] == 0
        page_shows(browser, f'tr[data-queue="{queue_name}"] .ready', "1", exact=True)

        # Purge asks first; Cancel leaves the queue alone, Yes empties it.
        for n in range(2):
            add.apply_async((n, 1), queue=queue_name)
        page_shows(browser, f'tr[data-queue="{queue_name}"] .ready', "3", exact=True)
        click(browser, f'tr[data-queue="{queue_name}"] button.purge')
        page_shows(browser, f'tr[data-queue="{queue_name}"] .question', f"Delete the 3 ready messages in {queue_name}?")
        click(browser, f'tr[data-queue="{queue_name}"] button.cancel')
        click(browser, f'tr[data-queue="{queue_name}"] button.purge')
        assert queue_state(amqp, queue_name)[0] == 3
        click(browser, f'tr[data-queue="{queue_name}"] button.confirm-purge')
        page_shows(browser, "#action-message", f"purged 3 message(s) from {queue_name}")
        assert queue_state(amqp, queue_name)[0] == 0
        page_shows(browser, f'tr[data-queue="{queue_name}"] .ready', "0", exact=True)

        # What the page can't do, and what it won't do for a request that isn't the page's.
        assert post(dashboard.url, "api/replay", {"queue": queue_name, "task_id": "no-such-id"})[0] == 404
        assert post(dashboard.url, "api/purge", {"queue": queue_name})[0] == 400  # no confirmation
        assert post(dashboard.url, "api/purge", {"queue": "not.shown", "confirm": "not.shown"})[0] == 404
        assert post(dashboard.url, "api/purge", f"queue={queue_name}&confirm={queue_name}", form=True)[0] == 415
        assert "No workers heard from." in visible_text(browser, "#no-workers")

        # The broker goes away: the page says so, and recovers by itself when it is back.
        proxy.stop()
        page_shows(browser, "#broker-state", "broker: down", exact=True)
        page_shows(browser, "#broker-problem", "reconnecting by itself")
        proxy.start()
        page_shows(browser, "#broker-state", "broker: up", exact=True)
        page_shows(browser, "#stream-state", "live", exact=True)
        assert "guest:guest" not in dashboard.log()  # the password is never logged
    finally:
        dashboard.stop()
        proxy.stop()


def test_without_the_extra_the_command_says_what_to_install():
    blocked = "import sys; sys.modules['starlette'] = sys.modules['uvicorn'] = None; from taskq.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", blocked, "dashboard", "-A", "tests.support.apps:app"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2 and result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1 and "install 'taskq-rabbitmq[dashboard]'" in result.stderr


def test_a_port_in_use_is_a_user_error(dashboard_deps):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "taskq", "dashboard", "-A", "tests.support.apps:app", "--port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_recent_failures_are_the_newest_dead_letters_with_their_args(dashboard_deps, app, queue_name, start_worker, broker_url, tmp_path):
    from tests.support.apps import fail

    start_worker([queue_name], 1)  # one child: dead-lettered in the order sent
    count = 60  # more than the 50 the page shows
    results = [fail.apply_async((f"failure {n}",), queue=queue_name) for n in range(count)]
    for result in results:
        with pytest.raises(TaskError):
            result.get(timeout=60)
    dashboard = Dashboard(["-A", "tests.support.apps:app", "-Q", queue_name, "--broker", broker_url], tmp_path / "dashboard.log")
    try:
        def failures() -> list[dict]:
            status, _, text = request(dashboard.url, path="/api/state")
            assert status == 200
            return json.loads(text)["failures"]

        shown = wait_until(lambda: failures() or None, what="the failures in /api/state")
        assert [f["task_id"] for f in shown] == [r.id for r in reversed(results)][:50]  # the newest 50, newest first
        assert shown[0]["args"] == f"'failure {count - 1}'"
        assert shown[0]["exc_message"] == f"failure {count - 1}"
    finally:
        dashboard.stop()


# -- who may talk to it: its own page and the operator's scripts, not another site ----------------


def request(url: str, method: str = "GET", path: str = "/", *, headers: dict | None = None, body=None):
    """One raw HTTP request (any Host, Origin or none): (status, headers, text)."""
    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Host": address.netloc, **({"Content-Type": "application/json"} if data else {}), **(headers or {})}
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
    finally:
        connection.close()


def test_the_dashboard_refuses_other_sites_and_rebound_names(dashboard_deps, app, amqp, queue_name, broker_url, tmp_path):
    from tests.support.apps import add

    dashboard = Dashboard(["-A", "tests.support.apps:app", "-Q", queue_name, "--broker", broker_url], tmp_path / "dashboard.log")
    try:
        own = dashboard.url.rstrip("/")  # http://127.0.0.1:PORT
        port = urllib.parse.urlsplit(own).port
        add.apply_async((1, 1), queue=queue_name)
        purge = {"queue": queue_name, "confirm": queue_name}

        # DNS rebinding: a page of evil.example resolved to 127.0.0.1 names itself in Host.
        for path in ("/", "/api/state", "/events", "/static/dashboard.js"):
            assert request(own, path=path, headers={"Host": f"evil.example:{port}"})[0] == 400, path
        rebound = request(own, "POST", "/api/purge", body=purge, headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"})
        assert rebound[0] == 400
        # Cross-site: another page posts to us, or something posts with no Origin and no marker.
        status, _, text = request(own, "POST", "/api/purge", body=purge, headers={"Origin": "http://evil.example"})
        assert status == 403 and "Origin http://evil.example is not this dashboard" in text
        assert request(own, "POST", "/api/purge", body=purge, headers={"Origin": "null"})[0] == 403
        assert request(own, "POST", "/api/purge", body=purge)[0] == 403
        assert queue_state(amqp, queue_name)[0] == 1  # nothing refused was done

        for name in ("127.0.0.1", "localhost"):
            assert request(own, path="/", headers={"Host": f"{name}:{port}"})[0] == 200
        status, _, text = request(own, "POST", "/api/purge", body=purge, headers={"Origin": own})  # the page's own
        assert status == 200 and json.loads(text) == {"purged": 1}
        add.apply_async((1, 1), queue=queue_name)
        assert post(dashboard.url, "api/purge", purge) == (200, {"purged": 1})  # a script, with the marker
    finally:
        dashboard.stop()


def test_beyond_localhost_the_dashboard_needs_a_token_and_the_page_gets_it_once(dashboard_deps, queue_name, broker_url, tmp_path):
    refused = subprocess.run(
        [sys.executable, "-m", "taskq", "dashboard", "-A", "tests.support.apps:app", "--broker", broker_url, "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env={k: v for k, v in os.environ.items() if k != "TASKQ_DASHBOARD_TOKEN"},
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--host 0.0.0.0" in refused.stderr and "--token" in refused.stderr

    token = "s3cret-" + os.urandom(8).hex()
    os.environ["TASKQ_DASHBOARD_TOKEN"] = token  # the Dashboard helper passes its environment on
    try:
        dashboard = Dashboard(["-A", "tests.support.apps:app", "-Q", queue_name, "--broker", broker_url, "--host", "0.0.0.0"],
                              tmp_path / "dashboard.log")
    finally:
        del os.environ["TASKQ_DASHBOARD_TOKEN"]
    try:
        port = urllib.parse.urlsplit(dashboard.url).port
        own = f"http://127.0.0.1:{port}"
        for path in ("/", "/api/state", "/events", "/?token=wrong"):
            status, _, text = request(own, path=path)
            assert status == 401 and "needs its token" in text, path
        status, headers, _ = request(own, path="/?token=" + token)
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        page_cookie = cookie.split(";", 1)[0]
        assert request(own, path="/", headers={"Cookie": page_cookie})[0] == 200
        assert request(own, path="/api/state", headers={"Authorization": f"Bearer {token}"})[0] == 200
        body = {"queue": "not.shown", "confirm": "not.shown"}
        # The token doesn't excuse another site: the cookie would go along with its POST.
        assert request(own, "POST", "/api/purge", body=body, headers={"Cookie": page_cookie, "Origin": "http://evil.example"})[0] == 403
        assert request(own, "POST", "/api/purge", body=body, headers={"Cookie": page_cookie, "Origin": own})[0] == 404
        assert request(own, "POST", "/api/purge", body=body, headers={"Authorization": f"Bearer {token}"})[0] == 404
        assert token not in dashboard.log()  # a secret, never printed
    finally:
        dashboard.stop()


def test_a_task_is_found_by_id_and_its_page_shows_state_timeline_result_traceback_and_worker(
    dashboard_deps, browser, broker_url, queue_name, start_worker, tmp_path, monkeypatch
):
    from selenium.webdriver.common.by import By

    from tests.support.apps_state import add, app as state_app, fail

    results = f"sqlite://{tmp_path / 'results.db'}"
    monkeypatch.setenv("TASKQ_TEST_RESULTS", results)  # the dashboard's app reads the same store
    worker = start_worker([queue_name], 1, app="tests.support.apps_state:app", extra_env={"TASKQ_TEST_RESULTS": results})
    [child_pid] = worker.child_pids()
    state_app.use_broker(broker_url)
    dashboard = Dashboard(["-A", "tests.support.apps_state:app", "-Q", queue_name, "--broker", broker_url],
                          tmp_path / "dashboard.log")
    try:
        added = add.apply_async((2, 3), queue=queue_name)
        failed = fail.apply_async(("boom on the task page",), queue=queue_name)
        assert added.get(timeout=20) == 5
        with pytest.raises(TaskError):
            failed.get(timeout=20)

        browser.get(dashboard.url)
        search = browser.find_element(By.CSS_SELECTOR, "#task-id")
        search.send_keys(added.id)
        click(browser, "#task-search button")
        page_shows(browser, "#state", "SUCCEEDED", exact=True)
        assert browser.current_url == f"{dashboard.url}task/{added.id}"
        page_shows(browser, "#task-name", add.name, exact=True)
        page_shows(browser, "#result", "5", exact=True)
        page_shows(browser, "#arguments", "args:   [2,3]")
        page_shows(browser, "#attempts", "1", exact=True)
        page_shows(browser, "#worker", f":{child_pid}")
        page_shows(browser, "#timeline tbody", "STARTED")
        page_shows(browser, "#timeline tbody tr:last-child", "SUCCEEDED")

        browser.get(f"{dashboard.url}task/{failed.id}")
        page_shows(browser, "#state", "FAILED", exact=True)
        page_shows(browser, "#error .exc", "ValueError: boom on the task page", exact=True)
        page_shows(browser, "#error .traceback", "raise ValueError(message)")
        page_shows(browser, "#reason", "failed: ValueError: boom on the task page")
        assert not browser.find_element(By.CSS_SELECTOR, "#result-section").is_displayed()

        browser.get(f"{dashboard.url}task/no-such-task")
        page_shows(browser, "#state", "PENDING", exact=True)
        assert browser.find_element(By.CSS_SELECTOR, "#pending-note").is_displayed()

        with urllib.request.urlopen(f"{dashboard.url}api/task/{added.id}", timeout=10) as response:
            record = json.load(response)
        assert record["state"] == "SUCCEEDED" and record["result"] == 5 and record["final"]
        assert [entry["state"] for entry in record["timeline"]] == ["STARTED", "SUCCEEDED"]
    finally:
        dashboard.stop()
        state_app.close()


def test_the_task_page_of_an_app_without_a_store_says_so(dashboard_deps, app, queue_name, broker_url, tmp_path):
    dashboard = Dashboard(["-A", "tests.support.apps:app", "-Q", queue_name, "--broker", broker_url],
                          tmp_path / "dashboard.log")
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{dashboard.url}api/task/some-id", timeout=10)
        assert answer.value.code == 404 and "no state store" in json.load(answer.value)["error"]
    finally:
        dashboard.stop()
