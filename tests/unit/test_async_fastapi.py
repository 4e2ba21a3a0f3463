"""docs/async.md's FastAPI example (examples/async_api.py), served by FastAPI's TestClient,
its task run by the real worker loop on the in-memory broker."""

from __future__ import annotations

import pytest

fastapi_testclient = pytest.importorskip("fastapi.testclient")

from examples.async_api import api, app as crawler_app  # noqa: E402


@pytest.fixture
def taskq_app():
    return crawler_app


def test_the_endpoint_enqueues_and_awaits_the_result(taskq_worker):
    with fastapi_testclient.TestClient(api) as client:
        response = client.post("/fetch", params={"url": "https://example.org"})
    assert response.status_code == 200
    body = response.json()
    assert body["length"] == len("https://example.org") and body["task_id"]
