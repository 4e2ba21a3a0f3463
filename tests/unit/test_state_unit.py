"""The state store's logic without a server: records, the in-memory backend, the middleware's
decisions (what it writes, when it gives up on the store), the handle's ``get()``, and a task's
``taskq.current().progress()`` through the real worker loop on the in-memory broker."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, Mapping

import pytest

import taskq
from taskq import App, ConfigurationError, StateStoreError, TaskError, TaskState
from taskq.context import TaskContext
from taskq.errors import OutsideTask
from taskq.message import Reply, TaskMessage, pack
from taskq.middleware import DeadLetter, Delivery, Outcome, Redelay, Retry, Skip, Succeeded, WorkerInfo
from taskq.middleware.delivery import dead_letter_failure
from taskq.middleware.delivery import failure
from taskq.middleware.state_store import StateRecorder
from taskq.state import StateStore, StoredResult, TaskRecord, open_store
from taskq import settings as state_settings
from taskq.state.memory import MemoryStore
from taskq.state.records import TimelineEntry
from taskq.state.store import retention_from_env
from taskq.testing import InlineWorker, reset_memory_broker
from tests.support.waiting import wait_until

app = App("state-unit")


@app.task
def plain() -> None: ...


@app.task(ignore_result=True)
def fire_and_forget() -> None: ...


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Down(StateStore):
    """A store that refuses every write, as an unreachable Redis does (counted)."""

    masked_url = "redis://down"
    retention = 60.0

    def __init__(self) -> None:
        self.writes = 0

    def write(self, task_id: str, fields: Mapping[str, Any], entry: Mapping[str, Any] | None = None) -> None:
        self.writes += 1
        raise StateStoreError("cannot write to the state store at redis://down: ConnectionError: refused")

    def read(self, task_id: str) -> TaskRecord | None:
        raise StateStoreError("cannot read the state store at redis://down: ConnectionError: refused")


def delivery(task=plain, *, attempts: int = 0, redelivered: bool = False) -> Delivery:
    envelope = TaskMessage(id="id-1", task=task.name, args=[1, 2], kwargs={"size": "xl"}, attempts=attempts)
    message = SimpleNamespace(headers={}, properties={}, body=envelope.body(),
                              delivery_info={"redelivered": redelivered})
    return Delivery("orders", message, envelope=envelope, task=task)


def succeeded(value: Any) -> Outcome:
    reply = Reply(task_id="id-1", ok=True, result=value)
    return Outcome(reply=reply, body=b"", runtime=0.1)


def raised(exc: BaseException) -> Outcome:
    try:
        raise exc
    except BaseException as caught:  # raised, so it has a traceback as a task's failure does
        reply = failure("id-1", caught)
    return Outcome(reply=reply, body=reply.body(), runtime=0.1, exception=exc)


def recorder(store: StateStore, sleeps: list[float] | None = None) -> StateRecorder:
    middleware = StateRecorder(lambda: store, sleep=(sleeps if sleeps is not None else []).append, clock=Clock())
    middleware.on_worker_start(WorkerInfo("state-unit", ("orders",), True, 4242))
    return middleware


# -- records and the in-memory store ----------------------------------------------------------


def test_the_states_are_the_documented_eight_and_four_are_final():
    assert [state.value for state in TaskState] == [
        "PENDING", "RECEIVED", "STARTED", "RETRYING", "SUCCEEDED", "FAILED", "DEAD_LETTERED", "REVOKED"]
    assert {state for state in TaskState if state.final} == {
        TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD_LETTERED, TaskState.REVOKED}
    assert TaskState.STARTED == "STARTED"  # a str: compares with its name, as JSON carries it


def test_a_record_written_by_a_newer_taskq_reads_without_crashing():
    record = TaskRecord.from_fields("x", {"state": "TELEPORTED", "attempts": "?", "meta": [1]}, [{"state": "?"}, 7])
    assert record.state is TaskState.PENDING and record.meta == {} and len(record.timeline) == 1


def test_writes_replace_the_record_append_to_the_timeline_and_restart_the_retention():
    clock = Clock()
    store = MemoryStore(retention=10.0, clock=clock)
    store.write("a", {"state": "STARTED", "task": "t", "progress": 0.5}, {"state": "STARTED", "at": 1.0})
    clock.now += 9
    store.write("a", {"state": "SUCCEEDED", "task": "t"}, {"state": "SUCCEEDED", "at": 2.0})
    clock.now += 9  # 18 s after the first write, 9 after the last: still kept
    record = store.read("a")
    assert record is not None and record.state is TaskState.SUCCEEDED and record.task == "t"
    assert record.progress is None  # the worker names the whole record each time
    assert [entry.state for entry in record.timeline] == [TaskState.STARTED, TaskState.SUCCEEDED]
    clock.now += 1.5
    assert store.read("a") is None


def test_the_timeline_keeps_only_the_latest_entries():
    store = MemoryStore()
    for n in range(state_settings.STATE_TIMELINE_LIMIT + 5):
        store.write("a", {"state": "STARTED"}, {"state": "STARTED", "at": float(n)})
    record = store.read("a")
    assert record is not None and len(record.timeline) == state_settings.STATE_TIMELINE_LIMIT
    assert record.timeline[-1].at == state_settings.STATE_TIMELINE_LIMIT + 4


def test_urls_choose_the_backend_and_a_wrong_one_is_refused_at_app():
    assert isinstance(open_store("memory://"), MemoryStore)
    with pytest.raises(ConfigurationError, match="expected 'embedded'"):
        App("x", results="postgres://nope")
    with pytest.raises(ConfigurationError, match="names its file"):
        App("x", results="sqlite://")


def test_a_bad_url_in_the_message_never_shows_its_password():
    with pytest.raises(ConfigurationError) as raised_error:
        App("x", results="postgres://user:secret@db/0")
    assert "secret" not in str(raised_error.value)


def test_retention_comes_from_the_environment_and_a_bad_value_is_an_error(monkeypatch):
    monkeypatch.setenv(state_settings.RESULT_RETENTION_ENV, "3600")
    assert retention_from_env() == 3600.0 and open_store("memory://").retention == 3600.0
    monkeypatch.setenv(state_settings.RESULT_RETENTION_ENV, "a day")
    with pytest.raises(ConfigurationError, match="TASKQ_RESULT_RETENTION"):
        retention_from_env()
    monkeypatch.setenv(state_settings.RESULT_RETENTION_ENV, "0")
    with pytest.raises(ConfigurationError):
        retention_from_env()
    monkeypatch.delenv(state_settings.RESULT_RETENTION_ENV)
    assert retention_from_env() == 86400.0


# -- the middleware ---------------------------------------------------------------------------


def run_to(store: StateStore, decision_for, task=plain, outcome: Outcome | None = None, **kwargs: Any) -> Any:
    middleware = recorder(store)
    d = delivery(task, **kwargs)
    assert middleware.before_run(d) is None
    d.outcome = outcome
    return middleware.before_settle(d, decision_for(d))


def test_a_success_is_recorded_with_its_value_before_the_ack():
    store = MemoryStore()
    assert run_to(store, lambda d: Succeeded(), outcome=succeeded({"w": 640})) is None
    record = store.read("id-1")
    assert record is not None and record.state is TaskState.SUCCEEDED and record.finished_at is not None
    assert record.outcome() == Reply(task_id="id-1", ok=True, result={"w": 640})
    assert record.arguments() == ([1, 2], {"size": "xl"}) and record.worker.endswith(":4242")
    assert [e.state for e in record.timeline] == [TaskState.STARTED, TaskState.SUCCEEDED]


def test_ignore_result_keeps_the_state_but_not_the_value():
    store = MemoryStore()
    run_to(store, lambda d: Succeeded(), task=fire_and_forget, outcome=succeeded("secret value"))
    record = store.read("id-1")
    assert record is not None and record.state is TaskState.SUCCEEDED and record.reply is None
    with pytest.raises(taskq.TaskqError, match="ignore_result"):
        StoredResult(store, "id-1").get(timeout=0)


def test_a_retried_failure_is_retrying_with_that_runs_error():
    store = MemoryStore()
    run_to(store, lambda d: Retry(countdown=2.0), outcome=raised(ValueError("flaky")))
    record = store.read("id-1")
    assert record is not None and record.state is TaskState.RETRYING and not record.state.final
    assert record.timeline[-1].detail == "ValueError: flaky"


def test_a_final_failure_is_failed_with_the_traceback_and_get_raises_the_rpc_error():
    store = MemoryStore()
    outcome = raised(KeyError("missing"))
    run_to(store, lambda d: dead_letter_failure(d.attempt, "failed", outcome.reply), outcome=outcome)
    record = store.read("id-1")
    assert record is not None and record.state is TaskState.FAILED and record.reason == "failed"
    with pytest.raises(TaskError) as error:
        StoredResult(store, "id-1").get(timeout=0)
    assert error.value.exc_type == "KeyError" and "raise" in error.value.remote_traceback
    assert error.value.task_id == "id-1"


@pytest.mark.parametrize("decision, state", [
    (DeadLetter("expired", "expired at 12:00"), TaskState.DEAD_LETTERED),
    (Skip("revoked"), TaskState.REVOKED),
    (Redelay(), TaskState.RECEIVED),
])
def test_each_decision_without_a_run_has_its_state(decision, state):
    store = MemoryStore()
    middleware = recorder(store)
    assert middleware.before_settle(delivery(), decision) is None
    record = store.read("id-1")
    assert record is not None and record.state is state
    assert record.task == plain.name and record.arguments() == ([1, 2], {"size": "xl"})  # never ran: still named


def test_the_outcome_keeps_what_the_run_recorded_and_progress_of_another_task_is_ignored():
    store = MemoryStore()
    middleware = recorder(store)
    d = delivery()
    middleware.before_run(d)
    middleware._progress(TaskContext(d.envelope, "orders"), 0.7, {"step": "upload"})
    middleware._progress(TaskContext(TaskMessage(id="other", task="t"), "orders"), 0.1, {})
    d.outcome = succeeded("done")
    middleware.before_settle(d, Succeeded())
    record = store.read("id-1")
    assert record is not None and record.state is TaskState.SUCCEEDED and record.progress == 0.7
    assert record.meta == {"step": "upload"} and record.started_at is not None and store.read("other") is None


def test_a_redelivered_message_goes_back_to_started_and_says_so():
    store = MemoryStore()
    run_to(store, lambda d: Succeeded(), outcome=succeeded(1))
    middleware = recorder(store)
    assert middleware.before_run(delivery(redelivered=True)) is None  # killed after the write, before the ack
    record = store.read("id-1")
    assert record is not None and record.state is TaskState.STARTED and record.reply is None
    assert record.timeline[-1].redelivered and not record.timeline[0].redelivered


def test_an_unreachable_store_is_retried_with_backoff_then_the_success_is_dead_lettered_not_acked():
    down, sleeps = Down(), []
    middleware = recorder(down, sleeps)
    d = delivery()
    d.outcome = succeeded(1)
    decision = middleware.before_settle(d, Succeeded())
    assert isinstance(decision, DeadLetter) and decision.reason == "state-store-unavailable"
    assert "redis://down" in decision.detail and decision.reply is not None
    assert down.writes == state_settings.STATE_WRITE_ATTEMPTS and len(sleeps) == state_settings.STATE_WRITE_ATTEMPTS - 1
    assert all(pause <= state_settings.STATE_WRITE_BACKOFF_MAX for pause in sleeps)


def test_an_unreachable_store_at_the_start_dead_letters_without_running():
    down = Down()
    decision = recorder(down).before_run(delivery())
    assert isinstance(decision, DeadLetter) and decision.reason == "state-store-unavailable"
    writes = down.writes
    # Settling that dead letter does not wait on the store a second time.
    assert recorder(down).before_settle(delivery(), decision) is None and down.writes == writes


def test_a_dead_letter_keeps_its_own_reason_when_the_store_is_down_too():
    outcome = raised(ValueError("x"))
    middleware = recorder(Down())
    d = delivery()
    d.outcome = outcome
    assert middleware.before_settle(d, dead_letter_failure(1, "retries-exhausted", outcome.reply)) is None


# -- the handle -------------------------------------------------------------------------------


def test_an_unknown_id_is_pending_and_get_times_out_saying_why():
    store = MemoryStore()
    handle = StoredResult(store, "never-sent")
    assert handle.state is TaskState.PENDING and handle.attempts == 0 and handle.progress is None
    with pytest.raises(TimeoutError, match="no record of it .PENDING.*retention of 24 h"):
        handle.get(timeout=0.05)


def test_get_waits_for_the_worker_to_finish():
    store = MemoryStore()
    store.write("a", {"state": "STARTED"})

    def finish() -> None:
        store.write("a", {"state": "SUCCEEDED", "reply": Reply(task_id="a", ok=True, result=42).body()})

    later = threading.Timer(0.05, finish)
    later.start()
    try:
        assert StoredResult(store, "a").get(timeout=5) == 42
    finally:
        later.cancel()


def test_an_unreachable_store_is_one_clear_error_for_the_caller():
    with pytest.raises(StateStoreError, match="cannot read the state store at redis://down"):
        StoredResult(Down(), "a")


def test_app_result_without_a_store_says_how_to_get_one():
    with pytest.raises(ConfigurationError, match="results=URL"):
        App("x").result("id")


# -- taskq.current() and progress through the real worker loop ----------------------------------


def test_current_outside_a_task_is_an_error():
    with pytest.raises(OutsideTask):
        taskq.current()


def test_progress_is_recorded_while_the_task_runs_and_the_result_is_readable_by_id():
    reset_memory_broker()
    store = MemoryStore()
    inline = App("state-inline", broker="memory://", results=store)
    seen: dict[str, Any] = {}
    may_finish = threading.Event()

    @inline.task
    def resize(image: int) -> str:
        current = taskq.current()
        current.progress(0.4, step="resize")
        seen["id"], seen["attempt"] = current.id, current.attempt
        may_finish.wait(5)
        return f"image {image} resized"

    @inline.task
    def bad_progress() -> None:
        taskq.current().progress(1.5)

    with InlineWorker(inline) as worker:
        sent = resize.delay(7)
        wait_until(lambda: inline.result(sent.id).progress == 0.4, timeout=5)
        running = inline.result(sent.id)
        assert running.state is TaskState.STARTED and running.meta == {"step": "resize"}
        may_finish.set()
        assert sent.get(timeout=5) == "image 7 resized"  # the sender's RPC reply
        assert inline.result(sent.id).get(timeout=5) == "image 7 resized"
        failed = bad_progress.delay()
        worker.wait_until_idle()
    assert seen == {"id": sent.id, "attempt": 1}
    with pytest.raises(TaskError, match="progress is a fraction"):
        inline.result(failed.id).get(timeout=1)
    reset_memory_broker()


def test_progress_meta_that_msgpack_cannot_carry_is_refused_in_the_task():
    context = TaskContext(TaskMessage(id="x", task="t"), "q")
    with pytest.raises(taskq.EncodeError):
        context.progress(0.5, handle=object())
    with pytest.raises(ValueError):
        context.progress(True)


def test_timeline_entries_round_trip():
    entry = TimelineEntry(TaskState.STARTED, 12.5, 2, "h:1", redelivered=True)
    assert TimelineEntry.from_fields(entry.to_fields()) == entry
    assert pack(entry.to_fields())


def test_progress_is_carried_in_the_lifecycle_events():
    import json

    import structlog

    from taskq.events import Broadcaster
    from taskq.middleware.lifecycle_events import LifecycleEvents

    broadcaster = Broadcaster("shop", ["orders"])
    events = LifecycleEvents(broadcaster)
    processors = list(structlog.get_config()["processors"])  # on_worker_start adds the broadcast's
    events.on_worker_start(WorkerInfo("shop", ("orders",), True, 1))
    try:
        TaskContext(TaskMessage(id="t-1", task="shop.resize"), "orders").progress(0.25, step="upload")
    finally:
        events.on_worker_stop()
        structlog.configure(processors=processors)
    TaskContext(TaskMessage(id="t-2", task="shop.resize"), "orders").progress(0.5)  # no longer listened to
    progress = [json.loads(body) for _, key, body in broadcaster._pending if key == "task.progress"]
    assert len(progress) == 1
    assert progress[0]["task_id"] == "t-1" and progress[0]["progress"] == 0.25
    assert progress[0]["meta"] == {"step": "upload"} and progress[0]["task"] == "shop.resize"


def test_the_testing_docs_state_example_runs_as_written():
    from tests.support import ROOT

    text = (ROOT / "docs" / "testing.md").read_text()
    section = text.split("## Task state in tests", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    reset_memory_broker()
    try:
        exec(compile(code, "docs/testing.md", "exec"), {"__name__": "testing_doc_example"})
    finally:
        reset_memory_broker()
