"""Running one task and turning what happened into a Reply; no broker in sight."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import structlog

from taskq import context
from taskq.errors import EncodeError
from taskq.message import Reply, TaskMessage
from taskq.middleware.delivery import Outcome, failure
from taskq.task import Task

if TYPE_CHECKING:
    from taskq.worker.limits import TaskThreadGuard


def run_task(task: Task, message: TaskMessage, queue: str, guard: TaskThreadGuard | None = None,
             encode_reply: bool = True) -> Outcome:
    """Call the task's function with the message's arguments, catching everything it raises.

    structlog context is bound here so the task's own log lines carry the task name, id,
    queue, pid and attempt. ``encode_reply=False`` when no reply will be sent (no
    ``reply_to``, or ``ignore_result``): a successful result nobody receives isn't encoded.
    """
    structlog.contextvars.bind_contextvars(
        task=message.task, task_id=message.id, queue=queue, pid=os.getpid(), attempt=message.attempts + 1
    )
    started = time.monotonic()
    raised: BaseException | None = None
    try:
        try:
            if guard is not None:
                guard.enter()
            current = context.entering(message, queue)  # taskq.current() inside the task
            try:
                result = task.function(*message.args, **message.kwargs)
            finally:
                context.leaving(current)
                if guard is not None:
                    guard.leave()  # a soft time limit can't be raised in this thread past here
            reply = Reply(task_id=message.id, ok=True, result=result)
        except Exception as exc:
            raised = exc
            reply = failure(message.id, exc)
        try:
            body = reply.body() if encode_reply or not reply.ok else b""
        except EncodeError as exc:
            raised = exc
            reply = failure(message.id, exc)
            body = reply.body()
        return Outcome(reply=reply, body=body, runtime=time.monotonic() - started, exception=raised)
    finally:
        structlog.contextvars.clear_contextvars()
