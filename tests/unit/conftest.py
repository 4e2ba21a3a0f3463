"""Every unit test proves it needs no broker: the network, the embedded broker's file and other
processes are closed to it (tests/support/isolation.py). Broker fixtures live in
tests/integration/conftest.py, out of reach of these tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.isolation import Isolation

CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Remember whether the test itself failed, so the guard below does not report it twice."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed


@pytest.fixture(autouse=True)
def isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Isolation]:
    """Closes the ways out for one test; fails it for an attempt even if the code caught the error."""
    closed = Isolation()
    closed.install(monkeypatch)
    yield closed
    if closed.attempts and not request.node.stash.get(CALL_FAILED, False):
        pytest.fail(f"the test caught what the unit guard raised, but it still tried to: {'; '.join(closed.attempts)}")
