"""The middleware protocol and each shipped middleware, without a broker: plain objects in, decisions out."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import pytest

from taskq import App, ConfigurationError
from taskq.errors import Retry as RetryRequest
from taskq.events import Broadcaster
from taskq.message import CONTENT_TYPE, Reply, TaskMessage
from taskq.middleware.workflows import Workflows
from taskq.middleware import (
    DeadLetter,
    Delivery,
    EtaRedelay,
    Expiry,
    Middleware,
    Outcome,
    Redelay,
    Retries,
    Retry,
    TimeLimits,
    WorkerInfo,
    default_middleware,
)
from taskq.middleware.app_hooks import AppHooks
from taskq.middleware.delivery import failure
from taskq.middleware.lifecycle_events import LifecycleEvents
from taskq.middleware.pipeline import Pipeline, no_decision, nothing
from taskq.middleware.time_limits import hard_limit_outcome
from taskq.middleware.revocation import Revocations
from taskq.testing import reset_memory_broker
from taskq.worker.child import ChildWorker
from taskq.worker.settle import Settler
from taskq.worker.child import WorkerSetup

app = App("middleware-unit")


@app.task(max_retries=2, retry_backoff=0.5, retry_jitter=False, time_limit=5, soft_time_limit=2)
def flaky() -> None: ...


@app.task
def plain() -> None: ...


def delivery(task=plain, *, attempts: int = 0, eta: float | None = None, expires: float | None = None,
             reply_to: str = "") -> Delivery:
    envelope = TaskMessage(id="id-1", task=task.name, attempts=attempts, eta=eta, expires_at=expires, reply_to=reply_to)
    return Delivery("orders", SimpleNamespace(headers={}, properties={}, body=b""), envelope=envelope, task=task)


def failed_with(exc: BaseException) -> Outcome:
    return Outcome(reply=failure("id-1", exc), body=b"", runtime=0.1, exception=exc)


def worker_info(broker_delays: bool = True) -> WorkerInfo:
    return WorkerInfo("shop", ("orders",), broker_delays, 1)


# -- the pipeline -----------------------------------------------------------------------------


class Recording(Middleware):
    def __init__(self, calls: list[str], name: str, decision=None) -> None:
        self.calls, self.name, self.decision = calls, name, decision

    def before_run(self, delivery):
        self.calls.append(self.name)
        return self.decision


class Broken(Middleware):
    def on_task_start(self, delivery):
        raise RuntimeError("bug in a hook")

    def before_run(self, delivery):
        raise RuntimeError("bug in a decision hook")


def test_only_middleware_overriding_a_hook_are_called_for_it():
    pipeline = Pipeline([Middleware(), Expiry(), Recording([], "r")])
    assert pipeline.wants("before_run") and not pipeline.wants("on_task_start")
    assert len(pipeline.methods["before_run"]) == 2  # Expiry and Recording, not the no-op base
    assert pipeline.on_task_start is nothing and pipeline.decide_failure is no_decision


def test_the_first_decision_wins_in_order_and_the_rest_are_not_asked():
    calls: list[str] = []
    stop = DeadLetter("no", "because")
    pipeline = Pipeline([Recording(calls, "a"), Recording(calls, "b", stop), Recording(calls, "c", Redelay())])
    assert pipeline.decide("before_run", delivery()) is stop
    assert calls == ["a", "b"]


def test_a_failing_hook_is_logged_and_the_others_still_run():
    calls: list[str] = []
    pipeline = Pipeline([Broken(), Recording(calls, "after")])
    pipeline.notify("on_task_start", delivery())
    assert pipeline.decide("before_run", delivery()) is None
    assert calls == ["after"]


def test_the_defaults_are_listed_once_in_hook_order():
    assert [type(m) for m in default_middleware()] == [Revocations, Expiry, EtaRedelay, Retries, TimeLimits]


# -- expiry and eta ---------------------------------------------------------------------------


def test_an_expired_message_is_dead_lettered_and_its_caller_told():
    decision = Expiry().before_run(delivery(expires=time.time() - 1, reply_to="r"))
    assert isinstance(decision, DeadLetter) and decision.reason == "expired"
    assert decision.reply is not None and decision.reply.exc_type == "taskq.DeadLettered"
    assert Expiry().before_run(delivery(expires=time.time() + 60)) is None


def test_an_early_message_goes_round_again_only_where_the_broker_delays():
    eta = EtaRedelay()
    eta.on_worker_start(worker_info(broker_delays=True))
    assert isinstance(eta.before_run(delivery(eta=time.time() + 60)), Redelay)
    assert eta.before_run(delivery(eta=time.time())) is None  # due: run it
    eta.on_worker_start(worker_info(broker_delays=False))
    assert eta.before_run(delivery(eta=time.time() + 60)) is None  # the in-memory broker: run it now


# -- retries and time limits -----------------------------------------------------------------


def test_retries_wrap_retry_decide():
    retries = Retries()
    first = delivery(flaky, attempts=0)
    first.outcome = failed_with(ValueError("db down"))
    assert retries.decide_failure(first) == Retry(countdown=0.5)
    last = delivery(flaky, attempts=2)
    last.outcome = failed_with(ValueError("db down"))
    decision = retries.decide_failure(last)
    assert isinstance(decision, DeadLetter) and decision.reason == "retries-exhausted" and decision.attempts == 3
    assert decision.detail == "ValueError: db down"


def test_without_max_retries_a_failure_is_dead_lettered_but_an_explicit_retry_is_honoured():
    retries = Retries()
    once = delivery(plain)
    once.outcome = failed_with(KeyError("x"))
    assert retries.decide_failure(once).reason == "failed"
    asked = delivery(plain)
    asked.outcome = failed_with(RetryRequest(countdown=3))
    assert retries.decide_failure(asked) == Retry(countdown=3.0)


def test_time_limits_come_from_the_task_and_a_hard_limit_is_a_failure():
    limited = delivery(flaky)
    assert TimeLimits().before_run(limited) is None
    assert (limited.soft_time_limit, limited.time_limit) == (2, 5)
    outcome = hard_limit_outcome(limited)
    assert not outcome.reply.ok and outcome.reply.exc_type == "taskq.errors.TimeLimitExceeded"


@pytest.mark.parametrize("options, problem", [
    ({"time_limit": 0}, "time_limit must be a positive"),
    ({"time_limit": 2, "soft_time_limit": 3}, "soft_time_limit must be shorter"),
    ({"max_retries": -1}, "max_retries must be >= 0"),
])
def test_each_middleware_checks_the_options_it_owns(options, problem):
    with pytest.raises(ConfigurationError, match=problem):
        App("checks").task(**options)(lambda: None)


# -- task options and ordering ------------------------------------------------------------------


def test_an_unknown_task_option_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigurationError, match=r"unknown option max_retry; the options are .*max_retries.*time_limit"):
        App("typo").task(max_retry=3)(lambda: None)


def test_an_option_belongs_to_its_middleware():
    bare = App("bare", middleware=[])
    with pytest.raises(ConfigurationError, match="unknown option max_retries"):
        bare.task(max_retries=3)(lambda: None)

    class Priority(Middleware):
        task_options = {"rate_limit": None}

    bare.add_middleware(Priority())
    task = bare.task(rate_limit="10/s")(lambda: None)
    assert task.options.settings == {"rate_limit": "10/s"}


def test_add_middleware_before_and_after():
    ordered = App("ordered")
    first, last = Middleware(), Middleware()
    ordered.add_middleware(first, before=Expiry)
    ordered.add_middleware(last, after=Retries)
    assert [type(m) for m in ordered.middleware] == [
        Revocations, Middleware, Expiry, EtaRedelay, Retries, Middleware, TimeLimits, Workflows]
    assert ordered.middleware[1] is first and ordered.middleware[5] is last
    with pytest.raises(ConfigurationError, match="no LifecycleEvents middleware"):
        ordered.add_middleware(Middleware(), before=LifecycleEvents)


# -- lifecycle events ---------------------------------------------------------------------------


def test_lifecycle_events_follow_the_hooks():
    broadcaster = Broadcaster("shop", ["orders"])
    events = LifecycleEvents(broadcaster)
    failing = delivery(flaky)
    failing.outcome = failed_with(ValueError("db down"))
    events.on_received(failing)
    events.on_task_start(failing)
    events.on_task_failed(failing)
    events.on_settled(failing, Retry(countdown=0.5))
    events.on_settled(failing, DeadLetter("failed", "ValueError: db down", headers={"task": flaky.name, "id": "id-1"}))
    kinds = [key for _, key, _ in broadcaster._pending]
    assert kinds == ["task.received", "task.started", "task.failed", "task.retried", "task.dead_lettered"]
    assert broadcaster.tasks_failed == 1 and broadcaster.current is None


def test_a_reply_is_wanted_only_by_a_caller_that_keeps_results():
    assert delivery(reply_to="amq.rabbitmq.reply-to").reply_wanted
    assert not delivery().reply_wanted
    assert Reply(task_id="x", ok=True).ok


def test_app_hooks_ask_only_for_the_hooks_that_have_functions():
    hooks = AppHooks()
    assert hooks.used_hooks() == set()
    hooks.add("on_task_start", lambda delivery: None)
    hooks.add("on_dead_letter", lambda delivery, decision: None)
    assert hooks.used_hooks() == {"on_task_start", "on_settled"}


def test_a_hook_no_middleware_uses_costs_one_shared_empty_call_per_task(monkeypatch):
    """Issue 14: hooks a deployment doesn't use cost nothing per task. Here the defaults and one
    ``@app.on_task_start`` function: ``on_received``, ``on_task_succeeded`` and ``on_settled``
    are used by nobody, so one message through the worker's per-message path calls, for each
    of them, the pipeline's shared ``nothing`` once and nothing else: no lookup by hook name,
    no loop, no AppHooks method that would find no function."""
    reset_memory_broker()
    hooked = App("unused-hooks", broker="memory://", default_queue="unused.q")

    @hooked.task(ignore_result=True)
    def noop() -> None: ...

    # Calls are counted by wrappers, not by sys.setprofile: a profiler on the main thread while
    # the task runs on another hung this test after test_copies_and_limits' async-exception test.
    calls: Counter[str] = Counter()

    def counted(name: str, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    by_name = {"Pipeline.notify": Pipeline, "Pipeline.decide": Pipeline,
               "AppHooks.on_task_succeeded": AppHooks, "AppHooks.on_settled": AppHooks}
    for name, owner in by_name.items():  # before the pipeline is built: it binds the methods then
        monkeypatch.setattr(owner, name.split(".")[1], counted(name, getattr(owner, name.split(".")[1])))

    started: list[Delivery] = []
    hooked.on_task_start(started.append)
    worker = ChildWorker(WorkerSetup.from_app(hooked, ["unused.q"]))
    for hook in ("on_received", "on_task_succeeded", "on_task_failed", "on_settled", "on_tick"):
        assert getattr(worker.pipeline, hook) is nothing, hook
        setattr(worker.pipeline, hook, counted("nothing", nothing))  # the shared no-op, counted

    message = TaskMessage(id="id-1", task=noop.name)
    with hooked.broker.connect() as connection:
        queue = hooked.queue("unused.q")(connection.default_channel)
        queue.declare()
        connection.Producer().publish(message.body(), routing_key="unused.q", headers=message.headers(),
                                      content_type=CONTENT_TYPE, content_encoding="binary")
        received = queue.get(no_ack=False)  # a real kombu Message, from kombu's in-memory transport
        settler = Settler(connection, worker.pipeline, queue_type="classic", broker_delays=False)
        try:
            worker._handle(settler, Delivery("unused.q", received))
        finally:
            worker._runner.executor.shutdown()
    assert received.acknowledged and [d.envelope.id for d in started] == ["id-1"]
    assert calls["nothing"] == 3  # on_received, on_task_succeeded, on_settled
    assert [calls[name] for name in by_name] == [0, 0, 0, 0]
