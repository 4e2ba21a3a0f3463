"""Tasks for the hostile-message tests (``-A tests.support.apps_hostile:app``): each always fails,
so every message sent to them, valid or not, ends in ``<queue>.dead``."""

from __future__ import annotations

from taskq import App

app = App("hostile")


@app.task(name="hostile.fails")
def fails(*args, **kwargs) -> None:
    raise ValueError("this task always fails")


@app.task(name="hostile.retried_once", max_retries=1, retry_backoff=0.0, retry_jitter=False)
def retried_once(*args, **kwargs) -> None:
    raise ValueError("this task always fails, twice")
