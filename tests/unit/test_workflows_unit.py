"""Workflows without a broker: the signatures' wire form, what follows a step
(taskq/continuation.py), the middleware's decisions, the chord join and claim in each store,
and before_settle asking every middleware in turn."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from taskq import App, ConfigurationError, TaskError, chain, chord, group
from taskq import continuation
from taskq.errors import InvalidMessage
from taskq.message import Reply, TaskMessage, decode_reply, decode_task, unpack
from taskq.middleware import DeadLetter, Delivery, Middleware, Outcome, Succeeded
from taskq.middleware.delivery import Skip, failure
from taskq.middleware.pipeline import Pipeline
from taskq.middleware.workflows import Workflows
from taskq.state.memory import MemoryStore

app = App("unit-workflows", results="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="slow")
def mul(x: int, y: int) -> int:
    return x * y


def test_a_signature_is_plain_data_naming_its_queue_and_options():
    assert add.s(1, 2).to_wire() == {"task": add.name, "args": [1, 2], "kwargs": {}, "queue": "default",
                                     "immutable": False, "countdown": None}
    wire = mul.si(3, y=4).set(queue="fast", countdown=5).to_wire()
    assert wire["queue"] == "fast" and wire["immutable"] and wire["countdown"] == 5 and wire["kwargs"] == {"y": 4}
    with pytest.raises(ConfigurationError, match="signature options"):
        add.s().set(retries=3)


def test_pipes_and_nested_chains_flatten_and_a_group_in_a_chain_is_refused():
    steps = (add.s(1, 1) | mul.s(2) | chain(add.s(3), add.s(4))).steps
    assert [s.task.name for s in steps] == [add.name, mul.name, add.name, add.name]
    with pytest.raises(ConfigurationError, match="chord"):
        chain(add.s(1, 1), group(add.s(1, 1)))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        group()


def test_each_step_receives_the_previous_result_unless_immutable_and_carries_the_rest():
    steps = chain(add.s(1, 2), mul.s(10), add.si(0, 0)).to_wire()
    first = continuation.start(steps[0], steps[1:], workflow_id="w", reply_to="r", correlation_id="w")
    assert first.message.id == "w.0" and first.queue == "default" and first.message.args == (1, 2)
    second = continuation.after_success(first.message, 3)
    assert isinstance(second, continuation.Send)
    assert second.queue == "slow" and second.message.args == (3, 10) and second.message.id == "w.1"
    assert second.message.reply_to == "r" and second.message.reply_id == "w"
    third = continuation.after_success(second.message, 30)
    assert isinstance(third, continuation.Send) and third.message.args == (0, 0)
    assert isinstance(continuation.after_success(third.message, 0), continuation.Final)


def test_the_workflow_survives_the_wire_and_a_malformed_one_is_refused():
    steps = chain(add.s(1, 2), mul.s(10)).to_wire()
    sent = continuation.start(steps[0], steps[1:], workflow_id="w").message
    received = decode_task(sent.body(), "application/x-msgpack", sent.headers(),
                           {"reply_to": "r", "correlation_id": "w"})
    assert received.workflow == sent.workflow and received.reply_id == "w"
    bad = TaskMessage(id="x", task="t", workflow={"chain": [{"task": 1}]})
    with pytest.raises(InvalidMessage):
        continuation.after_success(bad, 1)
    with pytest.raises(InvalidMessage):
        decode_task(b"\x82\xa4args\x90\xa8workflow\x01", "application/x-msgpack", {"task": "t", "id": "x"}, {})


def test_a_countdown_is_an_eta_from_now():
    sent = continuation.start(add.s(1, 1).set(countdown=5).to_wire(), [], workflow_id="w", now=100.0)
    assert sent.eta == 105.0


def test_a_failure_reply_names_its_step_for_the_caller():
    reply = Reply("w.1", ok=False, exc_type="ValueError", exc_message="no", step={"index": 1, "task": "t"})
    back = decode_reply("w", reply.body())
    assert back.step == {"index": 1, "task": "t"}
    error = TaskError(back.exc_type, back.exc_message, step=back.step)
    assert "workflow step 1, t" in str(error)


# -- the middleware ------------------------------------------------------------------------


def delivery_of(message: TaskMessage, result: object = None) -> Delivery:
    task = app.tasks[message.task]
    reply = Reply(message.id, ok=True, result=result)
    return Delivery("default", SimpleNamespace(headers=message.headers(), properties={}, body=message.body()),
                    envelope=message, task=task, outcome=Outcome(reply, reply.body(), 0.01))


def workflows(store: MemoryStore | None) -> Workflows:
    return Workflows((lambda: store) if store is not None else None, lambda name: ())


def test_a_middle_step_publishes_the_next_and_replies_nothing_the_last_replies():
    steps = chain(add.s(1, 2), mul.s(10)).to_wire()
    first = continuation.start(steps[0], steps[1:], workflow_id="w", reply_to="r", correlation_id="w").message
    decision = workflows(None).before_settle(delivery_of(first, 3), Succeeded())
    assert isinstance(decision, Succeeded) and not decision.reply and len(decision.publish) == 1
    published = decision.publish[0]
    assert published.queue == "slow" and published.properties == {"message_id": "w.1", "reply_to": "r",
                                                                    "correlation_id": "w"}
    assert unpack(published.body)["args"] == [3, 10]
    last = continuation.after_success(first, 3)
    assert isinstance(last, continuation.Send)
    assert workflows(None).before_settle(delivery_of(last.message, 30), Succeeded()) is None
    assert workflows(None).before_settle(delivery_of(TaskMessage("plain", add.name), 1), Succeeded()) is None


def members(size: int, link_error: bool = False) -> list[TaskMessage]:
    spec = {"id": "c", "size": size, "callback": [add.s(100).to_wire()],
            "link_error": add.s(0).to_wire() if link_error else None}
    return [continuation.start(add.s(i, 0).to_wire(), [], workflow_id=f"c.{i}", chord={**spec, "index": i},
                               reply_to="r", correlation_id="c").message for i in range(size)]


def test_the_member_completing_a_chord_publishes_its_callback_a_rerun_counts_once():
    store = MemoryStore()
    middleware = workflows(store)
    first, second = members(2)
    assert middleware.before_settle(delivery_of(first, 0), Succeeded()) == Succeeded(reply=False)
    assert middleware.before_settle(delivery_of(first, 0), Succeeded()) == Succeeded(reply=False)  # run twice
    done = middleware.before_settle(delivery_of(second, 1), Succeeded())
    assert isinstance(done, Succeeded) and len(done.publish) == 1
    callback = unpack(done.publish[0].body)
    assert callback["args"] == [[0, 1], 100]
    assert done.publish[0].properties["correlation_id"] == "c"


def test_a_callback_published_twice_runs_once_and_its_redelivery_still_runs():
    store = MemoryStore()
    middleware = workflows(store)
    first, second = members(2)
    middleware.before_settle(delivery_of(first, 0), Succeeded())
    # The worker died after publishing the callback, before acking: the re-run publishes it again.
    copies = [middleware.before_settle(delivery_of(second, 1), Succeeded()) for _ in range(2)]
    messages = [decode_task(d.publish[0].body, "application/x-msgpack", d.publish[0].headers, d.publish[0].properties)
                for d in copies if isinstance(d, Succeeded)]
    assert messages[0].id == messages[1].id == "c.callback.0"
    assert messages[0].workflow["claim"]["token"] != messages[1].workflow["claim"]["token"]
    runs = [middleware.before_run(delivery_of(message)) for message in (messages[0], messages[1], messages[0])]
    assert runs[0] is None and isinstance(runs[1], Skip) and runs[2] is None


def test_a_member_failing_for_good_names_its_step_and_sends_link_error_claimed_per_chord():
    middleware = workflows(MemoryStore())
    failed = members(2, link_error=True)[1]
    final = failure(failed.id, ValueError("no"))
    decision = middleware.before_settle(delivery_of(failed), DeadLetter("failed", "no", reply=final, failure=final))
    assert isinstance(decision, DeadLetter) and decision.reply is not None
    assert decision.reply.step == {"index": 0, "task": add.name, "member": 1}
    (error,) = decision.publish
    body = unpack(error.body)
    assert body["args"][0]["exc_type"] == "ValueError" and body["workflow"]["claim"]["key"] == "c:error"


def test_a_chord_in_a_worker_without_a_store_is_dead_lettered_not_acked():
    decision = workflows(None).before_settle(delivery_of(members(1)[0], 0), Succeeded())
    assert isinstance(decision, DeadLetter) and decision.reason == "chord-needs-results"


def test_before_settle_asks_every_middleware_each_seeing_the_previous_decision():
    seen = []

    class Replace(Middleware):
        def before_settle(self, delivery, decision):
            seen.append(decision)
            return Succeeded(reply=False)

    class Watch(Middleware):
        def before_settle(self, delivery, decision):
            seen.append(decision)
            return None

    pipeline = Pipeline([Replace(), Watch()])
    assert pipeline.before_settle(None, Succeeded()) == Succeeded(reply=False)
    assert seen == [Succeeded(), Succeeded(reply=False)]
    assert Pipeline([Watch()]).before_settle(None, Succeeded()) is None


def test_a_chord_needs_a_store_and_a_callback():
    plain = App("unit-workflows-plain")

    @plain.task
    def one() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="results="):
        chord([one.s()], one.s()).delay()
    with pytest.raises(ConfigurationError, match="callback"):
        chord([add.s(1, 1)]).delay()


# -- the join and claim (the SQLite and Redis stores: tests/integration/test_workflows.py) --------


def test_the_memory_store_joins_idempotently_in_member_order_and_claims_once():
    check_join_and_claim(MemoryStore())


def check_join_and_claim(store) -> None:
    assert store.join_member("g", 1, {"b": 1}, 3) is None
    assert store.join_member("g", 1, "again", 3) is None  # a re-run: the first result kept
    assert store.join_member("g", 0, [1, 2], 3) is None
    assert store.join_member("g", 2, None, 3) == [[1, 2], {"b": 1}, None], store
    assert store.join_member("g", 2, None, 3) == [[1, 2], {"b": 1}, None]  # complete stays complete
    assert store.claim_once("k", "one") and not store.claim_once("k", "two") and store.claim_once("k", "one")
    store.close()
