"""The one place a message is settled: whatever was decided is published with a confirm,
then the message is acked, so it is never in neither place (docs/guarantees.md).

A crash between the two leaves it in both (redelivered, run again: at least once), which
an operator can see. Replies are the exception: unconfirmed (see ``_reply``) but sent
before the ack, on the same socket, so a reply is never missing for a task the broker saw acked.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any, Mapping

import structlog
from kombu import Connection
from kombu.common import maybe_declare

from taskq import copies, delay, topology
from amqp.exceptions import ChannelError

from taskq.broker import NO_ROUTE, publish_on, publish_unconfirmed
from taskq.errors import Unroutable
from taskq.message import CONTENT_ENCODING, CONTENT_TYPE
from taskq.middleware.delivery import DeadLetter, Decision, Delivery, Publish, Redelay, Retry, Skip, Succeeded
from taskq.middleware.pipeline import Pipeline

log = structlog.get_logger("taskq.worker")


class Settler:
    """Carries out decisions on one connection: its publish channel (confirms) and reply channel."""

    def __init__(self, connection: Connection, pipeline: Pipeline, *, queue_type: str, broker_delays: bool) -> None:
        self.connection = connection
        self.pipeline = pipeline
        self.queue_type = queue_type
        self.broker_delays = broker_delays
        self.publish_channel = connection.channel()
        self.reply_channel = connection.channel()
        if broker_delays:
            # Retries and re-delays go through the cascade: declare it now (and mark it declared
            # for this connection) so a retry never waits on ~130 declarations.
            maybe_declare(delay.DelayTopology(queue_type), self.publish_channel)

    def settle(self, delivery: Delivery, decision: Decision) -> None:
        """Carry out ``decision`` (or what a ``before_settle`` hook replaced it with: the last
        moment a middleware can act before the ack), then tell the ``on_settled`` hooks."""
        decision = self.pipeline.before_settle(delivery, decision) or decision
        if isinstance(decision, Succeeded):
            self._publish_next(decision.publish)
            if decision.reply and delivery.reply_wanted and delivery.outcome is not None:
                self._reply(delivery, delivery.outcome.body)
            delivery.message.ack()
        elif isinstance(decision, Skip):
            delivery.message.ack()
        elif isinstance(decision, Redelay):
            envelope = delivery.envelope
            assert envelope is not None
            self._resend(delivery, envelope if decision.eta is None else replace(envelope, eta=decision.eta),
                         decision.headers)
        elif isinstance(decision, Retry):
            decision = self._retry(delivery, decision)
        elif isinstance(decision, DeadLetter):
            decision = self._dead_letter(delivery, decision)
        else:
            raise TypeError(f"not a decision: {decision!r}")
        self.pipeline.on_settled(delivery, decision)

    def _retry(self, delivery: Delivery, decision: Retry) -> Retry:
        """A failed attempt that will be retried sends no reply: the caller waits for the last one."""
        envelope = delivery.envelope
        assert envelope is not None
        # Without the broker's delay cascade (embedded/in-memory broker) a retry goes
        # straight back to the queue: the backoff is skipped, not the retry.
        wait = decision.countdown if self.broker_delays else 0.0
        again = replace(envelope, attempts=envelope.attempts + 1, eta=time.time() + wait if wait > 0 else None)
        self._resend(delivery, again)
        log.info("task will be retried", task=envelope.task, task_id=envelope.id,
                 attempt=again.attempts + 1, countdown=round(decision.countdown, 3))
        return replace(decision, countdown=wait)

    def _resend(self, delivery: Delivery, task_message: Any, extra: Mapping[str, Any] | None = None) -> None:
        """Publish the message again to the queue it came from, through the delay cascade if it has
        an eta, keeping the original's extra headers and reply properties."""
        message = delivery.message
        exchange, routing_key, entities = delay.route(delivery.queue, task_message.eta, self.queue_type)
        self._publish_then_ack(delivery, exchange=exchange, routing_key=routing_key, declare=entities,
                               headers={**copies.resend_headers(message.headers, task_message), **(extra or {})},
                               **copies.carried_properties(message.properties))

    def _dead_letter(self, delivery: Delivery, decision: DeadLetter) -> DeadLetter:
        """Park the message in ``<queue>.dead`` with the reason (and the failure, if it ran)."""
        self._publish_next(decision.publish)
        if decision.reply is not None and delivery.reply_wanted:
            self._reply(delivery, decision.reply.body())
        message = delivery.message
        headers = copies.dead_letter_headers(message.headers, reason=decision.reason, detail=decision.detail,
                                             queue=delivery.queue, attempts=decision.attempts, failure=decision.failure)
        properties = copies.carried_properties(message.properties)
        properties.pop("priority", None)
        dead_letter_queue = topology.dead_letter_queue_name(delivery.queue)
        # Kept as it came, so a replay is the very message that failed.
        self._publish_then_ack(delivery, routing_key=dead_letter_queue, headers=headers,
                               content_type=message.content_type or "application/octet-stream",
                               content_encoding=message.content_encoding or "binary", **properties)
        log.error("message dead-lettered", task=headers.get("task"), task_id=headers.get("id"),
                  reason=decision.reason, detail=decision.detail, queue=delivery.queue,
                  dead_letter_queue=dead_letter_queue)
        return replace(decision, headers=headers)

    def _publish_next(self, messages: tuple[Publish, ...]) -> None:
        """Publish what a workflow sends next (a chain's next step, a chord's callback), each
        confirmed and mandatory, before the caller acks: a crash in between re-runs this step,
        never drops the rest. A return (no queue for it) is Unroutable, so the message being
        settled is dead-lettered by the child's containment instead of acked."""
        for message in messages:
            exchange, routing_key, entities = delay.route(message.queue, message.eta, self.queue_type)
            try:
                publish_on(self.connection, message.body, channel=self.publish_channel, exchange=exchange,
                           routing_key=routing_key, declare=[*message.declare, *entities], headers=message.headers,
                           mandatory=True, **message.properties)
            except ChannelError as exc:
                if exc.reply_code != NO_ROUTE:
                    raise
                raise Unroutable(f"the workflow's next message has no queue {message.queue!r}: returned, not queued") from None

    def _publish_then_ack(self, delivery: Delivery, **publish: Any) -> None:
        """The delivery invariant, in one place: the broker confirmed the copy before the original goes."""
        publish_on(self.connection, delivery.body, channel=self.publish_channel, check_frame_size=True, **publish)
        delivery.message.ack()

    def _reply(self, delivery: Delivery, body: bytes) -> None:
        # Unconfirmed, on a channel of its own: waiting for a confirm cost a round trip per
        # task and protects nothing (see publish_unconfirmed).
        envelope = delivery.envelope
        assert envelope is not None and envelope.reply_to is not None
        publish_unconfirmed(self.reply_channel, body, exchange="", routing_key=envelope.reply_to,
                            content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING,
                            properties={"correlation_id": envelope.reply_id})


def close_within(connection: Connection, seconds: float) -> None:
    """Close the connection cleanly, or give up after ``seconds`` (the process is about to end)."""
    closer = threading.Thread(target=connection.release, daemon=True)
    closer.start()
    closer.join(seconds)
