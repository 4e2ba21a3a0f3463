"""Results over RPC: one reply queue per caller process, replies matched by correlation id.

A single listener thread owns the reply connection (channels are not thread-safe) and
hands each reply to whichever thread waits for it, so any number of results can be
outstanding, replies may arrive in any order, and ``get()`` works from any thread.

Why an exclusive reply queue rather than RabbitMQ's direct reply-to
(``amq.rabbitmq.reply-to``): direct reply-to only delivers to the channel that published
the request, so every ``.delay()`` would have to hop onto the listener's thread to
publish; and a reply sent while the caller is not yet consuming is dropped, not kept.
``bench/rpc_reply_queue.py`` measures both; the round trips are within noise of each
other on a local broker, so the simpler, thread-friendly design wins.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from kombu import Consumer

from taskq import topology
from taskq.errors import PublishError, ResultLost, TaskError, TaskqError
from taskq.message import Reply, decode_reply

if TYPE_CHECKING:
    from taskq.broker import Broker

_LOST = object()  # stored instead of a Reply when the reply connection broke


class ReplyListener:
    """Owns the caller's reply queue and wakes the threads waiting on each correlation id."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._condition = threading.Condition()
        self._expected: set[str] = set()
        self._replies: dict[str, Any] = {}
        self._queue_name: str | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failure: BaseException | None = None

    def reply_to(self) -> str:
        """The reply queue's name, starting the listener (and declaring the queue) on first use."""
        with self._condition:
            if self._thread is None or not self._thread.is_alive():
                self._failure = None
                self._queue_name = None
                self._thread = threading.Thread(target=self._run, name="taskq-replies", daemon=True)
                self._thread.start()
            while self._queue_name is None and self._failure is None:
                self._condition.wait()
            if self._queue_name is None:
                if isinstance(self._failure, self._broker.connection_errors):
                    # Nothing was sent: to the caller this is a send that failed.
                    raise PublishError(
                        f"cannot reach the broker at {self._broker.masked_url} to listen for results: {self._failure}"
                    ) from self._failure
                raise TaskqError(f"cannot listen for results: {self._failure}") from self._failure
            return self._queue_name

    def expect(self, task_id: str) -> None:
        """Register interest before publishing, so a fast reply is never discarded as unknown."""
        with self._condition:
            self._expected.add(task_id)

    def forget(self, task_id: str) -> None:
        with self._condition:
            self._expected.discard(task_id)
            self._replies.pop(task_id, None)

    def wait(self, task_id: str, timeout: float | None) -> Reply:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while task_id not in self._replies:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no result for task {task_id} within {timeout} s")
                self._condition.wait(remaining)
            reply = self._replies[task_id]
        if reply is _LOST:
            raise ResultLost(
                f"the connection carrying the reply for task {task_id} broke; "
                "the task may still have run"
            )
        return reply

    def is_ready(self, task_id: str) -> bool:
        with self._condition:
            return task_id in self._replies

    def stop(self) -> None:
        self._stopping = True

    def _on_message(self, message: Any) -> None:
        task_id = message.properties.get("correlation_id")
        try:
            reply = decode_reply(task_id, message.body)
        except Exception:  # a foreign or corrupt reply must not kill the listener
            return
        with self._condition:
            if task_id in self._expected:
                self._replies[task_id] = reply
                self._condition.notify_all()

    def _run(self) -> None:
        connection = self._broker.connect(heartbeat=30)
        try:
            queue = topology.reply_queue()
            channel = connection.channel()
            consumer = Consumer(channel, queues=[queue], on_message=self._on_message, no_ack=True)
            consumer.consume()
        except Exception as exc:
            connection.release()
            with self._condition:
                self._failure = exc
                self._condition.notify_all()
            return
        with self._condition:
            self._queue_name = queue.name
            self._condition.notify_all()
        try:
            while not self._stopping:
                try:
                    connection.drain_events(timeout=1.0)
                except socket.timeout:
                    connection.heartbeat_check()
        except Exception:
            # The exclusive reply queue died with the connection: replies still owed to
            # us are gone. Fail their waiters now instead of letting them hang; the next
            # publish starts a new listener with a new queue.
            with self._condition:
                for task_id in self._expected - self._replies.keys():
                    self._replies[task_id] = _LOST
                self._queue_name = None
                self._condition.notify_all()
        finally:
            connection.collect()


class AsyncResult:
    """A handle on one task's eventual result."""

    def __init__(self, task_id: str, task_name: str, listener: ReplyListener | None) -> None:
        self.id = task_id
        self.task_name = task_name
        self._listener = listener
        if listener is not None:
            weakref.finalize(self, listener.forget, task_id)

    def __repr__(self) -> str:
        return f"<AsyncResult {self.task_name}[{self.id}]>"

    def ready(self) -> bool:
        return self._listener is not None and self._listener.is_ready(self.id)

    def get(self, timeout: float | None = None) -> Any:
        """The task's return value; TaskError if it raised, TimeoutError if nothing came in time.

        Safe to call again after a TimeoutError, and from any thread.
        """
        if self._listener is None:
            raise TaskqError(f"task {self.task_name} was sent with ignore_result: no result will come")
        reply = self._listener.wait(self.id, timeout)
        if reply.ok:
            return reply.result
        raise TaskError(reply.exc_type, reply.exc_message, reply.traceback, task_id=self.id)
