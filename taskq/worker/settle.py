"""What becomes of a message a worker child ran: reply, retry, re-delay or dead letter, then
the ack; and the hard time limit, which settles the message before the child ends itself.

Split from child.py, which consumes and keeps the connection alive; this is mixed into
ChildWorker and uses its app, executor and ``_dead_letter``. Every path publishes with
confirms *before* it acks, so a message is never in neither place (docs/guarantees.md).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from kombu import Connection

from taskq import copies, delay, events, retry
from taskq.broker import publish_on, publish_unconfirmed
from taskq.errors import TimeLimitExceeded
from taskq.message import CONTENT_ENCODING, CONTENT_TYPE, Reply, TaskMessage
from taskq.worker import limits
from taskq.worker.execution import Outcome, failure

if TYPE_CHECKING:
    from taskq.app import App
    from taskq.task import Task
    from taskq.worker.child import Delivery

log = structlog.get_logger("taskq.worker")


class Settling:
    """The settling half of ChildWorker (see the module docstring)."""

    # Provided by ChildWorker, as is _dead_letter(publish_channel, connection, delivery, reason, detail, ...).
    app: App
    owns_process: bool
    _executor: limits.TaskThreads
    _reply_channel: Any

    def _settle(self, connection: Connection, publish_channel: Any, delivery: Delivery,
                task_message: TaskMessage, outcome: Outcome) -> None:
        """Reply, retry or dead-letter, then ack: each publish confirmed before the ack.

        A failed attempt that will be retried sends no reply: the caller waits for the
        last attempt. If we die before the ack, the message is redelivered and the task
        runs again (at least once) rather than leaving anything nowhere.
        """
        task = self.app.tasks[task_message.task]
        final = outcome.reply
        if not outcome.reply.ok:
            exc = outcome.exception if outcome.exception is not None else RuntimeError(outcome.reply.exc_message)
            decision = retry.decide(task.options.retry, exc, task_message.attempts)
            if decision.retry:
                # Without the broker's delay cascade (embedded/in-memory broker) a retry
                # goes straight back to the queue: the backoff is skipped, not the retry.
                wait = decision.countdown if self.app.broker_delays else 0.0
                again = replace(task_message, attempts=task_message.attempts + 1,
                                eta=time.time() + wait if wait > 0 else None)
                self._resend(connection, publish_channel, delivery, again)
                delivery.message.ack()
                events.task_retried(task_message, delivery.queue, delay=round(wait, 3),
                                    exc_type=outcome.reply.exc_type, exc_message=outcome.reply.exc_message)
                log.info("task will be retried", task=task.name, task_id=task_message.id,
                         attempt=again.attempts + 1, countdown=round(decision.countdown, 3))
                return
            if decision.cause is not None and decision.cause is not exc:
                final = failure(task_message.id, decision.cause)
            self._reply(connection, publish_channel, task_message, final.body())
            self._dead_letter(publish_channel, connection, delivery, decision.reason,
                              f"{final.exc_type}: {final.exc_message}", attempts=task_message.attempts + 1,
                              failure=final)
            return
        self._reply(connection, publish_channel, task_message, outcome.body)
        delivery.message.ack()

    def _hard_time_limit(self, connection: Connection, publish_channel: Any, delivery: Delivery,
                         task_message: TaskMessage) -> None:
        """The task thread is stuck past its time limit: settle its message as a failure, then die."""
        task = self.app.tasks[task_message.task]
        exc = TimeLimitExceeded(f"task {task.name} ran past its time_limit of {task.options.time_limit} s")
        log.error("hard time limit: settling the message and replacing this child",
                  task=task.name, task_id=task_message.id, time_limit=task.options.time_limit)
        outcome = Outcome(reply=failure(task_message.id, exc), body=failure(task_message.id, exc).body(),
                          runtime=task.options.time_limit or 0.0, exception=exc)
        events.task_finished(task_message, delivery.queue, False, outcome.runtime, outcome.reply.exc_type, str(exc))
        if not self.owns_process:
            # In-process worker: settle, and leave the stuck (daemon) thread behind.
            self._settle(connection, publish_channel, delivery, task_message, outcome)
            self._executor.abandon()
            return
        try:
            self._settle(connection, publish_channel, delivery, task_message, outcome)
            events.detach()  # publish what this child still holds, and say it is going
            close_within(connection, seconds=5.0)  # the close handshake proves the ack arrived
        finally:
            os._exit(limits.EXIT_TIME_LIMIT)

    @staticmethod
    def _reply_wanted(task: Task | None, task_message: TaskMessage) -> bool:
        return bool(task_message.reply_to) and not (task is not None and task.options.ignore_result)

    def _reply(self, connection: Connection, publish_channel: Any, task_message: TaskMessage, body: bytes) -> None:
        if not self._reply_wanted(self.app.tasks.get(task_message.task), task_message):
            return
        # Unconfirmed, on a channel of its own: waiting for a confirm cost a round trip per
        # task and protects nothing (see publish_unconfirmed). Sent before the ack, on the
        # same socket, so a reply is never missing for a task the broker saw acked.
        publish_unconfirmed(
            self._reply_channel,
            body,
            exchange="",
            routing_key=task_message.reply_to,
            content_type=CONTENT_TYPE,
            content_encoding=CONTENT_ENCODING,
            properties={"correlation_id": task_message.id},
        )

    def _resend(self, connection: Connection, publish_channel: Any, delivery: Delivery, task_message: TaskMessage) -> None:
        """Publish ``task_message`` again to the queue it came from, through the delay cascade if
        it has an eta, keeping the original's extra headers and reply properties (confirmed)."""
        message = delivery.message
        exchange, routing_key, entities = delay.route(delivery.queue, task_message.eta, self.app.queue_type)
        publish_on(
            connection,
            delivery.body,
            exchange=exchange,
            routing_key=routing_key,
            headers=copies.resend_headers(message.headers, task_message),
            declare=entities,
            channel=publish_channel,
            check_frame_size=True,
            **copies.carried_properties(message.properties),
        )


def dead_letter_reply(task_message: TaskMessage, detail: str) -> Reply:
    """What the caller of a task that was dead-lettered without running gets from ``get()``."""
    return Reply(task_id=task_message.id, ok=False, exc_type="taskq.DeadLettered", exc_message=detail)


def close_within(connection: Connection, seconds: float) -> None:
    """Close the connection cleanly, or give up after ``seconds`` (the process is about to end)."""
    closer = threading.Thread(target=connection.release, daemon=True)
    closer.start()
    closer.join(seconds)
