"""Chains, groups and chords in the worker: on a step's success, what the settler publishes next.

Every App has it (a message may carry a workflow whatever middleware the App chose). It
decides; it never publishes: ``before_settle`` returns ``Succeeded(publish=(next step,),
reply=False)`` and the settler publishes the next step with a confirm, mandatory, *before*
it acks this one (taskq/worker/settle.py). A worker killed between the two leaves both: this
step runs again and publishes the same next message id again (at least once, never a lost
rest of the chain).

A chord's join is the one shared state: each member's success adds its result to a per-chord
set in the state store (idempotent, atomic with the count: ``StateStore.join_member``), and
the member whose add completes the set publishes the callback. A member re-run after a crash
adds the same index again, counted once; if the crash fell between the join and the ack, the
re-run sees the complete set and publishes the callback again, so the callback carries a
claim token and runs only if its token is the first to claim the chord (``claim_once``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from taskq import continuation
from taskq.errors import StateStoreError
from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Publish, Skip, Succeeded, dead_letter_reply
from taskq.middleware.pipeline import Middleware, WorkerInfo
from taskq.state.store import StateStore

#: Dead-letter reason of a chord message whose App has no state store to join it in.
CHORD_NEEDS_RESULTS = "chord-needs-results"
#: Dead-letter reason when the store could not join or claim (the same as the state recorder's).
STATE_STORE_UNAVAILABLE = "state-store-unavailable"


class Workflows(Middleware):
    """Continues workflows: ``store`` opens the App's state store (None: no chords), ``declare``
    gives a queue's entities as the App declares them (so the next step's queue exists)."""

    def __init__(self, store: Callable[[], StateStore] | None, declare: Callable[[str], tuple[Any, ...]]) -> None:
        self.store = store
        self.declare = declare
        self.broker_delays = True

    def on_worker_start(self, worker: WorkerInfo) -> None:
        self.broker_delays = worker.broker_delays

    def before_run(self, delivery: Delivery) -> Decision | None:
        """A claimed message (a chord's callback) runs only for the token that won its claim."""
        envelope = delivery.envelope
        claim = envelope.workflow.get("claim") if envelope is not None and envelope.workflow else None
        if envelope is None or not isinstance(claim, dict):
            return None
        try:
            won = self._store().claim_once(str(claim["key"]), str(claim["token"]))
        except (StateStoreError, LookupError) as exc:
            return self._unavailable(delivery, exc)
        return None if won else Skip("workflow callback already claimed by another copy")

    def before_settle(self, delivery: Delivery, decision: Decision) -> Decision | None:
        envelope = delivery.envelope
        if envelope is None or not envelope.workflow:
            return None
        if isinstance(decision, DeadLetter):
            return self._failed(delivery, decision)
        outcome = delivery.outcome
        if not isinstance(decision, Succeeded) or outcome is None:
            return None
        try:
            step = continuation.after_success(envelope, outcome.reply.result)
            if isinstance(step, continuation.Final):
                return None  # the caller's reply: the settler sends it as for any task
            if isinstance(step, continuation.Send):
                return replace(decision, publish=(*decision.publish, self._publish(step)), reply=False)
            results = self._store().join_member(str(step.chord["id"]), step.index, step.result, int(step.chord["size"]))
        except (StateStoreError, LookupError, ValueError, TypeError) as exc:
            return self._unavailable(delivery, exc)
        if results is None:
            return replace(decision, reply=False)  # not the last member: nothing to send yet
        callback = continuation.callback(step.chord, results, reply_to=envelope.reply_to,
                                         correlation_id=envelope.correlation_id)
        return replace(decision, publish=(*decision.publish, self._publish(callback)), reply=False)

    def _failed(self, delivery: Delivery, decision: DeadLetter) -> DeadLetter:
        """A step that failed for good: its reply names the step; a chord member's failure sends the
        chord's ``link_error`` (claimed, so it runs once per chord)."""
        envelope = delivery.envelope
        assert envelope is not None and envelope.workflow is not None
        step = continuation.failed_step(envelope)
        reply = replace(decision.reply, step=step) if decision.reply is not None else None
        chord = envelope.workflow.get("chord")
        publish = decision.publish
        if isinstance(chord, dict) and decision.failure is not None:
            failure = {"task_id": envelope.id, "task": envelope.task, "chord_id": chord.get("id"), "step": step,
                       "exc_type": decision.failure.exc_type, "exc_message": decision.failure.exc_message}
            error = continuation.error_callback(chord, failure)
            if error is not None:
                publish = (*publish, self._publish(error))
        return replace(decision, reply=reply, publish=publish)

    def _publish(self, send: continuation.Send) -> Publish:
        message = send.message
        eta = send.eta if self.broker_delays else None  # no delays on this broker: run it now
        if eta is not None:
            message = replace(message, eta=eta)
        properties: dict[str, Any] = {"message_id": message.id}
        if message.reply_to:
            properties.update(reply_to=message.reply_to, correlation_id=message.reply_id)
        return Publish(message.body(), message.headers(), send.queue, properties, eta, self.declare(send.queue))

    def _store(self) -> StateStore:
        if self.store is None:
            raise LookupError(f"{CHORD_NEEDS_RESULTS}: a chord needs App(results=...) in the worker's app")
        return self.store()

    def _unavailable(self, delivery: Delivery, exc: Exception) -> DeadLetter:
        """Kept, not acked: a dead letter replayed once the store is back joins again."""
        envelope = delivery.envelope
        assert envelope is not None
        reason = CHORD_NEEDS_RESULTS if isinstance(exc, LookupError) else STATE_STORE_UNAVAILABLE
        detail = str(exc)
        return DeadLetter(reason, detail, reply=dead_letter_reply(envelope, f"{reason}: {detail}"),
                          attempts=delivery.attempt if delivery.outcome is not None else None)
