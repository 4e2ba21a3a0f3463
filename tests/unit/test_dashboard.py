"""The dashboard's state behind the page, without a broker: what ``taskq dashboard`` shows is
computed from lifecycle events, heartbeats and log lines (its end-to-end tests are in
tests/integration/test_dashboard.py)."""

from __future__ import annotations


def heartbeat(pid: int, queue: str, **fields) -> dict:
    return {"event": "worker.heartbeat", "host": "h", "pid": pid, "ppid": 1, "queues": [queue], "interval": 2.0,
            "current": None, "done": 0, "failed": 0, "dropped": 0, **fields}


def test_state_counts_throughput_and_forgets_silent_workers(monkeypatch):
    from taskq.dashboard import state as state_module

    now = [1000.0]
    monkeypatch.setattr(state_module.time, "time", lambda: now[0])
    state = state_module.DashboardState("shop", "amqp://guest:**@host//", ["orders"])
    state.lifecycle(heartbeat(1, "orders", current={"task": "t", "task_id": "x", "queue": "orders"}))
    state.lifecycle(heartbeat(2, "orders"))
    state.lifecycle(heartbeat(3, "elsewhere"))  # another queue's worker: not shown
    for kind, queue in [("task.succeeded", "orders")] * 3 + [("task.failed", "orders"), ("task.succeeded", "elsewhere")]:
        state.lifecycle({"event": kind, "queue": queue})
    snapshot = state.snapshot()
    assert [w["pid"] for w in snapshot["workers"]] == [1, 2] and state.busy_children() == {"orders": 1}
    assert sum(snapshot["throughput"]["succeeded"]) == 3 and sum(snapshot["throughput"]["failed"]) == 1
    assert snapshot["broker"] == {"up": False, "problems": {name: "connecting" for name in state_module.COMPONENTS}}

    state.lifecycle({**heartbeat(2, "orders"), "event": "worker.offline"})
    assert [w["pid"] for w in state.snapshot()["workers"]] == [1]
    now[0] += 6.5  # three 2 s heartbeats missed: killed, not stopped
    assert state.snapshot()["workers"] == []
    now[0] += 6 * 60  # out of the chart's window
    assert sum(state.snapshot()["throughput"]["succeeded"]) == 0


def test_state_keeps_a_bounded_tail_of_short_log_lines():
    from taskq.dashboard.state import LOG_LINES_KEPT, LONGEST_VALUE, DashboardState

    state = DashboardState("shop", "amqp://h//", ["orders"])
    for index in range(LOG_LINES_KEPT + 10):
        state.log_line({"event": "line", "index": index, "blob": "x" * (LONGEST_VALUE + 1)})
    lines = state.logs_after(0, limit=LOG_LINES_KEPT)
    assert len(lines) == LOG_LINES_KEPT and lines[0]["index"] == 10 and lines[-1]["n"] == LOG_LINES_KEPT + 10
    assert len(lines[0]["blob"]) == LONGEST_VALUE + 1 and lines[0]["blob"].endswith("…")
    assert [line["index"] for line in state.logs_after(LOG_LINES_KEPT + 8)] == [LOG_LINES_KEPT + 8, LOG_LINES_KEPT + 9]


def test_a_failure_shows_its_call_cut_short_and_survives_a_body_it_cant_decode():
    from taskq.dashboard.feed import LONGEST_ARGS, call_arguments
    from taskq.message import pack

    assert call_arguments(pack({"args": [1, "x"], "kwargs": {"retries": 2}})) == "1, 'x', retries=2"
    for hostile in (b"\xc1 not msgpack", "", pack([1, 2]), pack({"args": 5})):
        assert call_arguments(hostile) == "(a body taskq can't decode)"
    long = call_arguments(pack({"args": ["y" * 1000]}))
    assert len(long) == LONGEST_ARGS + 1 and long.endswith("…")
