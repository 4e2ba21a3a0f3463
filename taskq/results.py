"""Results over RPC: one reply queue per caller process, replies matched by correlation id.

Any number of results can be outstanding, replies may arrive in any order, and ``get()``
works from any thread. The reply connection is read by whichever thread is waiting
(leader/follower): a waiter that finds nobody reading takes the reader lock and reads
the connection itself, so a single caller's reply never changes threads; other waiters
sleep until a reply for them is read, or the reader leaves and one of them takes over.
An earlier design had a listener thread read every reply and wake the waiter: that
hand-off (and the two threads contending for the GIL) cost a third of a round trip.
While nobody waits, a keeper thread reads every ``KEEP_INTERVAL`` seconds, so heartbeats
flow, early replies are collected and a broken connection is noticed.

Why an exclusive reply queue rather than RabbitMQ's direct reply-to
(``amq.rabbitmq.reply-to``): direct reply-to only delivers to the channel that published
the request, so every ``.delay()`` would have to publish on the reply connection's
channel; and a reply sent while the caller is not yet consuming is dropped, not kept.
``bench/rpc_reply_queue.py`` measures both; the round trips are within noise of each
other on a local broker, so the simpler, thread-friendly design wins.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import threading
import time
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from kombu import Consumer

from taskq import settings, topology
from taskq.errors import ResultLost, TaskqError, remote_error
from taskq.message import Reply, decode_reply

if TYPE_CHECKING:
    from kombu import Connection

    from taskq.broker import Broker, Budget

class _Lost(enum.Enum):
    """Stored instead of a Reply when the reply connection broke (an enum: one typed sentinel)."""

    LOST = "lost"


_LOST = _Lost.LOST
READ_SLICE = 1.0  # seconds a reader blocks at most before it looks at its deadline and heartbeats
KEEP_INTERVAL = 1.0  # seconds between the keeper's reads while nobody waits
POLL = 0.0005  # seconds: a read that only collects what has already arrived
Result = TypeVar("Result")  # the task function's return type (see taskq.task.Task)


class ReplyListener:
    """Owns the caller's reply queue; the waiting threads read it (see the module docstring)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._condition = threading.Condition()  # guards _expected and _replies; wakes waiters
        self._reader = threading.Lock()  # held by the one thread reading the reply connection
        self._setup = threading.Lock()  # serialises opening the connection
        self._expected: set[str] = set()
        self._replies: dict[str, Reply | _Lost] = {}
        self._connection: Connection | None = None
        self._queue_name: str | None = None
        self._stopped = threading.Event()
        self._keeper: threading.Thread | None = None
        # Awaiting coroutines, by task id: resolved from the reading thread with
        # call_soon_threadsafe, so an ``await result`` holds no thread. While any are
        # pending, the keeper reads continuously instead of every KEEP_INTERVAL.
        self._futures: dict[str, list[asyncio.Future[Reply | _Lost]]] = {}
        self._wake_keeper = threading.Event()

    def reply_to(self, budget: Budget | None = None) -> str:
        """The reply queue's name, opening the connection (and declaring the queue) on first use.

        Opening is retried within ``budget``, the send's own: if the broker can't be reached
        nothing was sent, and to the caller this is a send that failed (PublishError).
        """
        budget = budget or self._broker.budget()
        while True:
            name = self._queue_name
            if name is not None:
                return name
            try:
                with self._setup:  # one attempt at a time, but the pause between them outside it
                    if self._queue_name is None:
                        self._open(budget)
            except self._broker.connection_errors as exc:
                budget.retry_or_raise(exc, f"cannot reach the broker at {self._broker.masked_url} to listen for results")

    def _open(self, budget: Budget) -> None:
        connection = self._broker.connect(
            heartbeat=settings.LISTENER_HEARTBEAT, bounded=True, connect_timeout=budget.timeout(self._broker.retry.connect_timeout)
        )
        try:
            connection.ensure_connection(max_retries=0)  # once: retrying is the budget's job, not kombu's
            queue = topology.reply_queue()
            consumer = Consumer(connection.channel(), queues=[queue], on_message=self._on_message, no_ack=True)
            consumer.consume()
        except Exception as exc:
            connection.collect()
            if isinstance(exc, self._broker.connection_errors):
                raise
            raise TaskqError(f"cannot listen for results: {exc}") from exc
        self._connection = connection
        self._queue_name = queue.name
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep, name="taskq-replies", daemon=True)
            self._keeper.start()

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
        while True:
            with self._condition:
                if task_id in self._replies:
                    reply = self._replies[task_id]
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no result for task {task_id} within {timeout} s")
                # Tried under the condition's lock, and the reader gives up the reader lock
                # under it too: a waiter can't miss the moment the reader leaves.
                if not self._reader.acquire(blocking=False):
                    self._condition.wait(remaining)
                    continue
            self._read_as_leader(READ_SLICE if remaining is None else min(READ_SLICE, remaining), until_quiet=False)
        return _arrived(task_id, reply)

    async def await_reply(self, task_id: str, timeout: float | None) -> Reply:
        """``wait`` for a coroutine: a future the reading thread resolves; no thread waits for it."""
        future: asyncio.Future[Reply | _Lost] = asyncio.get_running_loop().create_future()
        with self._condition:
            if task_id in self._replies:
                future.set_result(self._replies[task_id])
            else:
                self._futures.setdefault(task_id, []).append(future)
        self._wake_keeper.set()
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no result for task {task_id} within {timeout} s") from None
        finally:
            with self._condition:
                waiting = self._futures.get(task_id, [])
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    self._futures.pop(task_id, None)
        return _arrived(task_id, reply)

    def _resolve(self, task_id: str) -> None:
        """With the condition held: hand a stored reply to the coroutines awaiting it, on their loops."""
        for future in self._futures.pop(task_id, ()):
            future.get_loop().call_soon_threadsafe(_settle_future, future, self._replies[task_id])

    def is_ready(self, task_id: str) -> bool:
        if self._reader.acquire(blocking=False):
            self._read_as_leader(POLL)  # collect a reply that arrived while nobody waited
        with self._condition:
            return task_id in self._replies

    def stop(self) -> None:
        """Close the reply connection (its queue goes with it); results still owed are lost."""
        self._stopped.set()
        self._wake_keeper.set()
        with self._reader:
            self._broken(self._connection, close=True)

    # -- reading, with the reader lock held ------------------------------------------------

    def _read_as_leader(self, timeout: float, until_quiet: bool = True) -> None:
        """Read one reply, waiting up to ``timeout`` s (and, ``until_quiet``, all that already
        arrived); then hand the reader lock on and wake the waiters."""
        connection = self._connection
        try:
            if connection is None:
                self._broken(None)  # no connection: nothing still expected can come
                return
            try:
                connection.drain_events(timeout=timeout)
                while until_quiet:
                    connection.drain_events(timeout=POLL)
            except socket.timeout:
                connection.heartbeat_check()
        except Exception:
            self._broken(connection)
        finally:
            with self._condition:
                self._reader.release()
                self._condition.notify_all()

    def _broken(self, connection: Connection | None, close: bool = False) -> None:
        """The exclusive reply queue died with ``connection``: fail the waiters of replies
        still owed now instead of letting them hang; the next send opens a new queue.

        Under the setup lock, and only if ``connection`` is still the current one: a
        thread may have opened a new connection meanwhile, and its replies are not lost.
        """
        with self._setup:
            if self._connection is not connection:
                return
            with self._condition:
                for task_id in self._expected - self._replies.keys():
                    self._replies[task_id] = _LOST
                    self._resolve(task_id)
                self._condition.notify_all()
            self._connection = None
            self._queue_name = None
        if connection is not None:
            if close:
                try:
                    connection.release()
                except Exception:  # already broken: just drop it
                    connection.collect()
            else:
                connection.collect()

    def _on_message(self, message: Any) -> None:
        task_id = message.properties.get("correlation_id")
        try:
            reply = decode_reply(task_id, message.body)
        except Exception:  # a foreign or corrupt reply must not break the reader
            return
        with self._condition:
            if task_id in self._expected:
                self._replies[task_id] = reply
                self._resolve(task_id)
                self._condition.notify_all()

    def _keep(self) -> None:
        """While no thread waits: heartbeats, early replies, noticing a broken connection, and
        reading for the coroutines that await replies (they hold no thread to read with)."""
        while not self._stopped.is_set():
            awaited = bool(self._futures)
            if not awaited:
                self._wake_keeper.wait(KEEP_INTERVAL)
                self._wake_keeper.clear()
                awaited = bool(self._futures)
            if self._stopped.is_set() or self._connection is None:
                continue
            # Awaited: wait for the reader lock (a waiting thread may hold it) and read a slice.
            if self._reader.acquire(timeout=READ_SLICE) if awaited else self._reader.acquire(blocking=False):
                self._read_as_leader(READ_SLICE if awaited else POLL)


def _arrived(task_id: str, reply: Reply | _Lost) -> Reply:
    if reply is _LOST:
        raise ResultLost(f"the connection carrying the reply for task {task_id} broke; the task may still have run")
    return reply


def _settle_future(future: asyncio.Future[Reply | _Lost], reply: Reply | _Lost) -> None:
    """On the future's loop: a coroutine that gave up (timed out, cancelled) is left alone."""
    if not future.done():
        future.set_result(reply)


class AsyncResult(Generic[Result]):
    """A handle on one task's eventual result."""

    def __init__(self, task_id: str, task_name: str, listener: ReplyListener | None,
                 revoker: Callable[[str, bool], object] | None = None) -> None:
        self.id = task_id
        self.task_name = task_name
        self._listener = listener
        self._revoker = revoker
        if listener is not None:
            weakref.finalize(self, listener.forget, task_id)

    def __repr__(self) -> str:
        return f"<AsyncResult {self.task_name}[{self.id}]>"

    def ready(self) -> bool:
        return self._listener is not None and self._listener.is_ready(self.id)

    def revoke(self, terminate: bool = False) -> None:
        """``App.revoke`` this task: returns once the broker confirmed the revocation (docs/revoke.md)."""
        if self._revoker is None:
            raise TaskqError("this result has no app to revoke through: use app.revoke(task_id)")
        self._revoker(self.id, terminate)

    def get(self, timeout: float | None = None) -> Result:
        """The task's return value; TaskError if it raised (TaskRevoked if revoked), TimeoutError if nothing came in time.

        Safe to call again after a TimeoutError, and from any thread.
        """
        if self._listener is None:
            raise TaskqError(f"task {self.task_name} was sent with ignore_result: no result will come")
        reply = self._listener.wait(self.id, timeout)
        return self._result(reply)

    async def aget(self, timeout: float | None = None) -> Result:
        """``get`` for an event loop: awaits the RPC reply without blocking the loop or holding a thread."""
        if self._listener is None:
            raise TaskqError(f"task {self.task_name} was sent with ignore_result: no result will come")
        return self._result(await self._listener.await_reply(self.id, timeout))

    def _result(self, reply: Reply) -> Result:
        if reply.ok:
            # The wire gives back whatever the task returned; Task's signature is what makes it a Result.
            result: Result = reply.result
            return result
        raise remote_error(reply.exc_type, reply.exc_message, reply.traceback, task_id=self.id, step=reply.step)

    def __await__(self) -> Generator[Any, None, Result]:
        """``await result``: ``aget()`` with no timeout."""
        return self.aget().__await__()
