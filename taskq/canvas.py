"""Workflows with Celery's names: signatures (``add.s(2, 3)``), ``chain``, ``group``, ``chord``.

Each is a plain-data description (``to_wire``: msgpack-able dicts, never pickle) that is sent
as ordinary task messages: a chain as its first step carrying the rest
(taskq/continuation.py), a group as N messages, a chord as N messages that each know the
callback. No coordinator runs anywhere; docs/workflows.md says who publishes what, when.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Union

from taskq import continuation
from taskq.errors import ConfigurationError, GroupError, TaskError
from taskq.results import AsyncResult

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.task import Task

#: The options ``.set()`` takes.
SIGNATURE_OPTIONS = ("queue", "countdown")


@dataclass(frozen=True)
class Signature:
    """One task call, not made yet: the task, its arguments, its options (``.set()``).

    ``immutable`` (``.si()``): in a chain it does not receive the previous step's result.
    """

    task: Task[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    immutable: bool = False

    @property
    def app(self) -> App:
        return self.task.app

    def set(self, **options: Any) -> Signature:
        """The same call with options: ``queue=``, ``countdown=`` (seconds)."""
        unknown = sorted(set(options) - set(SIGNATURE_OPTIONS))
        if unknown:
            raise ConfigurationError(f"signature options are {', '.join(SIGNATURE_OPTIONS)}, not {', '.join(unknown)}")
        return replace(self, options={**self.options, **options})

    def to_wire(self) -> dict[str, Any]:
        return {"task": self.task.name, "args": list(self.args), "kwargs": dict(self.kwargs),
                "queue": self.options.get("queue") or self.task.options.queue, "immutable": self.immutable,
                "countdown": self.options.get("countdown")}

    def __or__(self, other: Signature | chain) -> chain:
        return chain(self, other)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        """Send it (extra arguments first, as Celery's partials); the handle's ``get()`` gives its result."""
        call = replace(self, args=args + self.args, kwargs={**self.kwargs, **kwargs}) if args or kwargs else self
        return chain(call).delay()

    apply_async = delay


class chain:  # noqa: N801 - Celery's name, so code migrates unchanged
    """Steps run one after another, each receiving the previous one's result (unless ``.si()``)."""

    def __init__(self, *steps: Signature | chain) -> None:
        flat: list[Signature] = []
        for step in steps:
            if isinstance(step, chain):
                flat.extend(step.steps)
            elif isinstance(step, Signature):
                flat.append(step)
            else:
                raise ConfigurationError(f"a chain's steps are signatures (task.s(...)), not {type(step).__name__}; "
                                         "for a group followed by a callback use chord(group, callback)")
        if not flat:
            raise ConfigurationError("an empty chain has nothing to run")
        self.steps: list[Signature] = flat

    def __or__(self, other: Signature | chain) -> chain:
        return chain(self, other)

    def to_wire(self) -> list[dict[str, Any]]:
        return [step.to_wire() for step in self.steps]

    def delay(self) -> AsyncResult[Any]:
        """Send the first step, carrying the rest; ``get()`` gives the last step's result, or raises
        the TaskError of the step that failed (``error.step``)."""
        workflow_id = str(uuid.uuid4())
        steps = self.to_wire()
        send = continuation.start(steps[0], steps[1:], workflow_id=workflow_id, correlation_id=workflow_id)
        return send_one(self.steps[0].app, send, want_result=True)

    apply_async = delay


class group:  # noqa: N801
    """Members run in parallel; ``delay().get()`` gives their results in order."""

    def __init__(self, *members: Signature | chain | Iterable[Signature | chain]) -> None:
        items: list[Any] = []
        for member in members:
            items.extend(member if not isinstance(member, (Signature, chain)) else [member])
        self.members: list[Signature | chain] = []
        for item in items:
            if not isinstance(item, (Signature, chain)):
                raise ConfigurationError(f"a group's members are signatures or chains, not {type(item).__name__}")
            self.members.append(item)
        if not self.members:
            raise ConfigurationError("an empty group has nothing to run")

    def delay(self) -> GroupResult:
        return GroupResult([as_chain(member).delay() for member in self.members])

    apply_async = delay


class chord:  # noqa: N801
    """A group, then ``callback`` with the list of the members' results, once all have finished.

    Needs ``App(results=...)``: the join is counted in the state store (docs/workflows.md).
    ``link_error`` runs once, with a dict describing the failure, if a member fails for good.
    """

    def __init__(self, header: group | Iterable[Signature | chain], callback: Signature | chain | None = None,
                 *, link_error: Signature | None = None) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.callback = callback
        self.link_error = link_error

    def __call__(self, callback: Signature | chain) -> AsyncResult[Any]:
        """Celery's ``chord(header)(callback)``: send it now."""
        return chord(self.header, callback, link_error=self.link_error).delay()

    def delay(self) -> AsyncResult[Any]:
        """Send the members; the handle's ``get()`` gives the callback's result, or the TaskError of
        the first member (or callback step) that failed."""
        if self.callback is None:
            raise ConfigurationError("a chord needs a callback: chord(group, callback.s())")
        body = as_chain(self.callback)
        app = body.steps[0].app
        if app.results is None:
            raise ConfigurationError("a chord counts its finished members in the state store: build the App "
                                     "with results=URL (docs/workflows.md, docs/results.md)")
        chord_id = str(uuid.uuid4())
        members = [as_chain(member) for member in self.header.members]
        spec = {"id": chord_id, "size": len(members), "callback": body.to_wire(),
                "link_error": self.link_error.to_wire() if self.link_error is not None else None}
        handles = []
        for index, member in enumerate(members):
            steps = member.to_wire()
            send = continuation.start(steps[0], steps[1:], workflow_id=f"{chord_id}.{index}",
                                      chord={**spec, "index": index}, correlation_id=chord_id)
            handles.append(send_one(member.steps[0].app, send, want_result=True))
        return ChordResult(handles)


def as_chain(item: Signature | chain) -> chain:
    return item if isinstance(item, chain) else chain(item)


def send_one(app: App, send: continuation.Send, *, want_result: bool) -> AsyncResult[Any]:
    """Publish a workflow's first message like any task (confirmed; the reply matched by its correlation id)."""
    message = send.message
    if send.eta is not None:
        message = replace(message, eta=send.eta)
    return app.send(message, queue=send.queue, want_result=want_result)


class ChordResult(AsyncResult[Any]):
    """The chord's handle: replies come under the chord's id. Keeps its members' handles, each of
    which would forget that id when collected."""

    def __init__(self, members: list[AsyncResult[Any]]) -> None:
        first = members[0]
        super().__init__(first.id, first.task_name, first._listener)
        self.members = members


class GroupResult:
    """The handles of a group's members, in order."""

    def __init__(self, results: list[AsyncResult[Any]]) -> None:
        self.results = results

    def __len__(self) -> int:
        return len(self.results)

    def ready(self) -> bool:
        return all(result.ready() for result in self.results)

    def get(self, timeout: float | None = None) -> list[Any]:
        """Every member's result in order; if any failed, GroupError with each member's result or
        TaskError (``error.results``), so one failure does not hide the others' results."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outcomes: list[Any] = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                outcomes.append(result.get(timeout=remaining))
            except TaskError as exc:
                outcomes.append(exc)
        if any(isinstance(outcome, TaskError) for outcome in outcomes):
            raise GroupError(outcomes)
        return outcomes


Canvas = Union[Signature, chain, group, chord]
