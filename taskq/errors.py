"""The errors taskq raises: one small hierarchy, so callers catch ``TaskqError`` and
never need to know kombu's or py-amqp's exception classes.

Every class is here, the embedded broker's and the operator tools' too, so the tree can
be read in one place. The exceptions are the embedded transport's wire errors
(``taskq.embedded.transport``): they also subclass py-amqp's classes, so kombu handles
them as RabbitMQ's own, and this module imports no library.
"""

from __future__ import annotations

from typing import Any


class TaskqError(Exception):
    """Base of every error taskq raises on purpose."""


class ConfigurationError(TaskqError):
    """The app, a task or the command line was set up wrongly (bad -A path, bad option)."""


class BrokerError(TaskqError):
    """The broker itself is at fault, not a task or its message: say, an embedded broker
    file that is damaged, replaced or not ours, which taskq refuses rather than overwrite."""


class EmbeddedBrokerError(BrokerError):
    """Base of the errors the embedded broker raises on purpose."""


class BrokerBusyError(EmbeddedBrokerError):
    """The database stayed locked by other processes for longer than GIVE_UP_AFTER_SECONDS."""


class BrokerUnavailableError(EmbeddedBrokerError):
    """The broker file can't be reached for now (disk full, I/O error): retried like a broker that is down."""


class BrokerFileError(EmbeddedBrokerError):
    """The broker file is damaged, replaced, foreign, newer than this taskq or not writable.

    Never retried: another try would find the same file, and using it anyway would lose or
    overwrite the tasks it holds. The message names the file and what to do about it.
    """


class NoSuchQueue(TaskqError):
    """The dead-letter queue asked for doesn't exist on the broker."""


class UserActionError(TaskqError):
    """An action the dashboard page asked for that can't be done (no such queue, no such dead letter)."""


class InvalidMessage(TaskqError):
    """A received message that can't be run; ``reason`` is a short code for the dead-letter header."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class UnsupportedTask(ConfigurationError):
    """A function taskq can't run as a task (yet): ``async def``, or a generator, whose body a call never runs."""


class PublishError(TaskqError):
    """The broker did not confirm a publish, even after the bounded retry."""


class Unroutable(PublishError):
    """A mandatory message matched no binding on its exchange: the broker returned it, nothing was queued."""


class FrameTooLarge(PublishError):
    """A message's headers would not fit in one AMQP frame; sent, the broker would close the connection."""


class EncodeError(TaskqError, TypeError):
    """Task arguments or a result cannot be carried as msgpack."""


class TaskError(TaskqError):
    """The task ran and raised; carries the remote exception type, message and traceback."""

    def __init__(
        self,
        exc_type: str,
        exc_message: str,
        remote_traceback: str = "",
        task_id: str | None = None,
        step: dict[str, Any] | None = None,
    ) -> None:
        where = f" (workflow step {step.get('index')}, {step.get('task')})" if step else ""
        super().__init__(f"{exc_type}: {exc_message}{where}")
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.remote_traceback = remote_traceback
        self.task_id = task_id
        #: In a chain or chord, the step that failed: ``{"index": 1, "task": "shop.charge"}``; else None.
        self.step = step


class GroupError(TaskqError):
    """Members of a group (or a chord's header) failed: ``results`` holds, per member in order,
    its result or its TaskError, so partial failure is reported member by member."""

    def __init__(self, results: list[Any]) -> None:
        failed = [index for index, result in enumerate(results) if isinstance(result, TaskError)]
        super().__init__(f"{len(failed)} of {len(results)} group members failed (members {failed[:10]})")
        self.results = results
        self.failed = failed


#: The ``exc_type`` of the reply a revoked task's caller gets (taskq/middleware/revocation.py).
REVOKED_EXC_TYPE = "taskq.TaskRevoked"


class TaskRevoked(TaskError):
    """The task was revoked: dead-lettered (``revoked``) without running, or stopped while it ran."""


def remote_error(exc_type: str, exc_message: str, remote_traceback: str = "", task_id: str | None = None,
                 step: dict[str, Any] | None = None) -> TaskError:
    """What ``get()`` raises for a failed reply: TaskRevoked for a revoked task, so a caller can
    tell "someone cancelled it" from "it raised" without comparing strings."""
    cls = TaskRevoked if exc_type == REVOKED_EXC_TYPE else TaskError
    return cls(exc_type, exc_message, remote_traceback, task_id=task_id, step=step)


class InvalidTaskId(TaskqError):
    """Not a task id (empty, too long, spaces or control characters): nothing was revoked."""


class ResultLost(TaskqError):
    """The connection carrying replies broke, so a reply may never arrive."""


class Retry(Exception):
    """Raised by a task to ask for another attempt later: ``raise taskq.Retry(countdown=5)``.

    Not a TaskqError on purpose: it is a request, not a failure, and a task's own
    ``except TaskqError`` around taskq calls must not swallow it. It never reaches a
    caller: ``get()`` sees the eventual success or the final failure.
    ``max_retries`` overrides the task's limit for this request; raise it ``from`` the
    exception that prompted it, and that exception is what the final failure reports.
    """

    def __init__(self, countdown: float | None = None, *, max_retries: int | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested by the task")
        self.countdown = countdown
        self.max_retries = max_retries


class SoftTimeLimitExceeded(TaskqError):
    """Raised inside a task that ran past its ``soft_time_limit``; it may catch it and clean up."""

    def __init__(self, message: str = "the task ran past its soft time limit") -> None:
        super().__init__(message)


class TimeLimitExceeded(TaskqError):
    """A task ran past its hard ``time_limit``; its worker child was replaced to stop it."""


class StateStoreError(TaskqError):
    """The task-state store (``App(results=...)``) can't be reached, or its data is damaged or foreign."""


class OutsideTask(TaskqError):
    """``taskq.current()`` was called where no task is running."""
