"""What a workflow sends next, given where a message stands in it and what it returned: pure
functions over plain data, no I/O, so every rule is unit-tested without a broker.

The rest of a chain travels in the message (the body's ``workflow`` map, docs/wire-format.md),
so no coordinator holds a workflow's state: the worker that finishes a step publishes the
next one before it acks its own (taskq/middleware/workflows.py, taskq/worker/settle.py).
Only a chord's join needs shared state, a per-chord set of finished members in the state
store (``StateStore.join_member``), because N workers finish N members independently.

A signature on the wire: ``{"task", "args", "kwargs", "queue", "immutable", "countdown"}``.
A message's ``workflow`` map (every key optional):

- ``id``: the workflow's id; step *i* of it is the message ``<id>.<i>``
- ``step``: this message's index in its chain (named when it fails)
- ``chain``: the signatures still to run after this one, in order
- ``chord``: ``{"id", "index", "size", "callback", "link_error"}`` when this chain is member
  ``index`` of a chord's header: joined once ``chain`` is empty
- ``claim``: ``{"key", "token"}``: run only if ``token`` is the first to claim ``key`` (a chord's
  callback or error callback, which a crashed worker may have published twice)
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Union

from taskq.errors import InvalidMessage
from taskq.message import TaskMessage


@dataclass(frozen=True)
class Send:
    """Publish ``message`` to ``queue`` (at ``eta``, epoch seconds, if the broker can delay)."""

    message: TaskMessage
    queue: str
    eta: float | None = None


@dataclass(frozen=True)
class Join:
    """This chord member is done: record ``result`` as member ``index`` of chord ``chord["id"]``."""

    chord: dict[str, Any]
    index: int
    result: Any


@dataclass(frozen=True)
class Final:
    """The workflow's last step: its reply is the caller's answer (nothing else to send)."""


Next = Union[Send, Join, Final]


def step_id(workflow_id: str, index: int) -> str:
    """Deterministic: a step re-run after a crash publishes the same next message id again."""
    return f"{workflow_id}.{index}"


def start(signature: Mapping[str, Any], rest: list[dict[str, Any]], *, workflow_id: str, step: int = 0,
          previous: tuple[Any, ...] = (), chord: dict[str, Any] | None = None, claim: dict[str, Any] | None = None,
          reply_to: str | None = None, correlation_id: str | None = None, now: float | None = None) -> Send:
    """The message that runs ``signature`` as step ``step`` of workflow ``workflow_id``, carrying
    ``rest`` (and the chord it belongs to); ``previous`` is the last step's result, prepended to
    the arguments unless the signature is immutable (``.si()``)."""
    workflow: dict[str, Any] = {"id": workflow_id, "step": step}
    if rest:
        workflow["chain"] = rest
    if chord is not None:
        workflow["chord"] = chord
    if claim is not None:
        workflow["claim"] = claim
    args = tuple(signature.get("args") or ())
    if not signature.get("immutable"):
        args = previous + args
    countdown = signature.get("countdown")
    message = TaskMessage(
        id=step_id(workflow_id, step), task=str(signature["task"]), args=args,
        kwargs=dict(signature.get("kwargs") or {}), reply_to=reply_to, correlation_id=correlation_id,
        workflow=workflow,
    )
    eta = (now if now is not None else time.time()) + float(countdown) if countdown else None
    return Send(message, str(signature["queue"]), eta)


def after_success(envelope: TaskMessage, result: Any) -> Next:
    """What follows a step of ``envelope``'s workflow that returned ``result``."""
    workflow = envelope.workflow or {}
    rest = checked_chain(workflow)
    if rest:
        return start(rest[0], rest[1:], workflow_id=workflow_id(workflow, envelope), step=step_of(workflow) + 1,
                     previous=(result,), chord=workflow.get("chord"), reply_to=envelope.reply_to,
                     correlation_id=envelope.correlation_id)
    chord = workflow.get("chord")
    if isinstance(chord, dict):
        return Join(chord, int(chord["index"]), result)
    return Final()


def callback(chord: Mapping[str, Any], results: list[Any], *, reply_to: str | None, correlation_id: str | None) -> Send:
    """A chord's callback, given every member's result in order: its own (deterministic) id, and a
    fresh claim token, so a second publish of it (a crash after the join) never runs twice."""
    body = chord["callback"]
    return start(body[0], body[1:], workflow_id=f"{chord['id']}.callback", previous=(results,),
                 claim={"key": f"{chord['id']}:callback", "token": str(uuid.uuid4())},
                 reply_to=reply_to, correlation_id=correlation_id)


def error_callback(chord: Mapping[str, Any], failure: dict[str, Any]) -> Send | None:
    """A chord's ``link_error`` (if any) for a member that failed for good; claimed per chord, so it
    runs once however many members fail, and however often one is re-run."""
    link_error = chord.get("link_error")
    if not link_error:
        return None
    return start(link_error, [], workflow_id=f"{chord['id']}.error", previous=(failure,),
                 claim={"key": f"{chord['id']}:error", "token": str(uuid.uuid4())})


def failed_step(envelope: TaskMessage) -> dict[str, Any]:
    """What a failure reply names: the step's index in its chain (or chord member) and task."""
    workflow = envelope.workflow or {}
    step: dict[str, Any] = {"index": step_of(workflow), "task": envelope.task}
    chord = workflow.get("chord")
    if isinstance(chord, dict):
        step["member"] = chord.get("index")
    return step


def workflow_id(workflow: Mapping[str, Any], envelope: TaskMessage) -> str:
    value = workflow.get("id")
    return value if isinstance(value, str) and value else envelope.id


def step_of(workflow: Mapping[str, Any]) -> int:
    step = workflow.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) else 0


def checked_chain(workflow: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rest of the chain; a malformed one is refused (off the wire: hostile until checked)."""
    rest = workflow.get("chain") or []
    if not isinstance(rest, list) or not all(isinstance(s, dict) and isinstance(s.get("task"), str)
                                             and isinstance(s.get("queue"), str) for s in rest):
        raise InvalidMessage("malformed-body", "'workflow.chain' must be a list of signatures")
    return rest
