"""What one message is while a worker handles it (``Delivery``), what its run came to
(``Outcome``), and what a hook may decide becomes of it (the decisions): plain data the
middleware hooks read and return, so no hook needs the connection, the channels or the App.

Hooks return a decision instead of publishing or acking themselves, so "publish with
confirm, then ack" lives in one place (taskq/worker/settle.py) whatever a middleware does.
Returning None from a decision hook means "no opinion: carry on" (for ``before_run``: run it).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Union

from taskq.message import Reply, TaskMessage, message_body

if TYPE_CHECKING:
    from taskq.task import Task


@dataclass(frozen=True)
class Outcome:
    """A finished run: the reply to send (already encoded, so encoding errors are caught here)."""

    reply: Reply
    body: bytes
    runtime: float
    exception: BaseException | None = None  # what the task raised, for the retry decision


@dataclass
class Delivery:
    """One message from receipt to settlement; filled in as the pipeline goes.

    ``envelope`` and ``task`` stay None for a message that could not be decoded or names
    no task of this app: such a message never reaches the run hooks.
    """

    queue: str  #: the queue it was consumed from
    message: Any  #: the kombu Message, as received (headers, properties, ack)
    received_at: float = field(default_factory=time.monotonic)
    envelope: TaskMessage | None = None  #: the decoded task message
    task: Task[..., Any] | None = None  #: looked up once, when decoded
    started_at: float | None = None  #: monotonic, when the run began
    outcome: Outcome | None = None  #: set once the run ended
    soft_time_limit: float | None = None  #: seconds, set by the time-limits middleware
    time_limit: float | None = None
    #: Set by a middleware while the task runs (revocation's ``terminate``): the worker then
    #: abandons the run the way it abandons one past its hard time limit.
    abandon: str | None = None

    @property
    def body(self) -> bytes:
        return message_body(self.message.body)

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""
        return self.envelope.attempts + 1 if self.envelope is not None else 1

    @property
    def reply_wanted(self) -> bool:
        """Whether a caller waits for a reply: it said where, and the task keeps results."""
        envelope = self.envelope
        if envelope is None or not envelope.reply_to:
            return False
        return not (self.task is not None and self.task.options.ignore_result)


# -- decisions: what a hook may decide becomes of the message ------------------------------


@dataclass(frozen=True)
class Publish:
    """A message the settler publishes (confirmed, mandatory) before it acks the one it settles:
    the next step of a chain, a chord's callback. Plain data, built by a middleware."""

    body: bytes
    headers: dict[str, Any]
    queue: str
    properties: dict[str, Any]
    eta: float | None = None  #: epoch seconds: through the delay cascade
    declare: tuple[Any, ...] = ()  #: the queue's entities, declared as the App declares them


@dataclass(frozen=True)
class Succeeded:
    """The run's result: publish ``publish`` (each confirmed), reply (if a caller waits and
    ``reply``), then ack. A chain's middle step publishes the next one and replies nothing."""

    publish: tuple[Publish, ...] = ()
    reply: bool = True


@dataclass(frozen=True)
class Skip:
    """Ack and drop without running or replying (say, a revoked task)."""

    reason: str = ""


@dataclass(frozen=True)
class Redelay:
    """Send the message again unchanged, to arrive at its eta: one more trip through the delay cascade.

    ``eta`` (epoch seconds) replaces the message's eta and ``headers`` are added (the rate
    limit sends a message back to its reserved slot, marked as holding it)."""

    eta: float | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Retry:
    """Send it again as the next attempt, ``countdown`` seconds from now (0 without the broker's delays)."""

    countdown: float = 0.0


@dataclass(frozen=True)
class DeadLetter:
    """Park it in ``<queue>.dead`` with a reason; tell a waiting caller ``reply`` first, if given.

    ``attempts`` and ``failure`` describe a run that failed; ``headers`` is filled in by the
    settler (the dead letter's headers), for the ``on_settled`` hooks.
    """

    reason: str
    detail: str
    reply: Reply | None = None
    attempts: int | None = None
    failure: Reply | None = None
    headers: dict[str, Any] | None = None
    publish: tuple[Publish, ...] = ()  #: published (confirmed) before the dead letter: a chord's ``link_error``


Decision = Union[Succeeded, Skip, Redelay, Retry, DeadLetter]


def dead_letter_failure(attempt: int, reason: str, final: Reply) -> DeadLetter:
    """A run that failed for good: the caller gets ``final``, the dead letter says why."""
    return DeadLetter(reason, f"{final.exc_type}: {final.exc_message}", reply=final, attempts=attempt, failure=final)


# -- the replies a worker builds itself ------------------------------------------------------


def exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def failure(task_id: str, exc: BaseException) -> Reply:
    return Reply(
        task_id=task_id,
        ok=False,
        exc_type=exception_type_name(exc),
        exc_message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def dead_letter_reply(task_message: TaskMessage, detail: str) -> Reply:
    """What the caller of a task that was dead-lettered without running gets from ``get()``."""
    return Reply(task_id=task_message.id, ok=False, exc_type="taskq.DeadLettered", exc_message=detail)
