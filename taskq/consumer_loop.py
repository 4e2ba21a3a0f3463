"""The one reconnecting consumer loop: worker children, the dashboard's threads and the
``taskq logs`` / ``taskq events`` listeners all stay connected through it.

Why one: each of them must ride out a broker restart the same way (a jittered wait that
grows while the broker stays away, so a fleet that lost it together does not come back in
one burst; the wait cut short when asked to stop; a fresh start once a connection worked),
and three copies of that drifted apart. What differs between them is only what they say
about it (a worker's log line, the dashboard's "broker: down", a listener's line on stderr),
so that is left to two callbacks, in the manner of kombu's ``ConsumerMixin``
(``on_connection_revived``, ``on_connection_error``), without its inheritance.

The loop knows nothing of queues: ``consume(connection)`` declares and reads what its user
needs, and returns once the stop flag is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, Union

from taskq.backoff import reconnect_backoff


class LoopConnection(Protocol):
    """What the loop asks of a connection: a kombu ``Connection`` has it (so does a test's fake)."""

    def ensure_connection(self, *, max_retries: int, reraise_as_library_errors: bool) -> object: ...
    def release(self) -> None: ...
    def collect(self) -> None: ...


Conn = TypeVar("Conn", bound=LoopConnection)

#: What tells the loop to stop: an Event (the dashboard's threads), or a callable such as a
#: signal handler's flag (a worker child, ``taskq logs``), polled while the loop waits.
StopFlag = Union[threading.Event, Callable[[], bool]]
#: Seconds between looks at a callable stop flag while waiting: how soon a Ctrl-C ends a wait.
STOP_POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Lost:
    """A connection that failed or never came up, as ``on_lost`` hears of it."""

    #: What was raised (one of the ``errors`` the loop was given).
    error: BaseException
    #: Whether the connection had come up (lost while consuming) or was never made
    #: (unreachable, refused): a worker counts refusals only of the second kind.
    was_connected: bool
    #: Tries that failed in a row before this one: 0 for the first of an outage.
    failures: int
    #: Seconds the loop waits before it connects again.
    pause: float


def run(
    connect: Callable[[], Conn],
    consume: Callable[[Conn], None],
    *,
    errors: tuple[type[BaseException], ...],
    should_stop: StopFlag,
    on_connected: Callable[[bool], None] | None = None,
    on_lost: Callable[[Lost], None] | None = None,
    backoff: Callable[[int], float] = reconnect_backoff,
) -> None:
    """Connect, ``consume(connection)``, and on one of ``errors`` connect again, until stopped.

    ``connect()`` builds a new, unconnected kombu Connection; the loop connects it with one
    retry and owns it: released after ``consume`` returned, dropped without the close
    handshake after an error (a dead socket would make that handshake hang). Between tries
    it waits ``backoff(failures)`` seconds, cut short by ``should_stop``.

    ``on_connected(reconnected)`` runs once each connection is up (``reconnected``: an
    earlier one of this loop had been); ``on_lost(Lost)`` once each try fails, before the
    wait. An exception raised by ``consume`` that is not one of ``errors``, or by either
    callback, ends the loop and is raised to the caller: a listener that never connected
    raises its first error that way, as a wrong URL should be told at once.
    """
    stopped = should_stop.is_set if isinstance(should_stop, threading.Event) else should_stop
    failures = 0  # tries failed in a row: the wait grows with it
    was_ever_connected = False
    while not stopped():
        connection: Conn | None = None
        connected = False
        try:
            connection = connect()
            # reraise_as_library_errors=False: the error says what went wrong (refused,
            # unreachable), not kombu's OperationalError around it; ``errors`` has both.
            connection.ensure_connection(max_retries=1, reraise_as_library_errors=False)
            connected = True
            failures = 0
            if on_connected is not None:
                on_connected(was_ever_connected)
            was_ever_connected = True
            consume(connection)
        except errors as exc:
            if connection is not None:
                connection.collect()
            pause = backoff(failures)
            if on_lost is not None:
                on_lost(Lost(exc, connected, failures, pause))
            failures += 1
            wait(should_stop, pause)
            continue
        except BaseException:
            if connection is not None:
                connection.collect()
            raise
        release(connection)


def wait(should_stop: StopFlag, seconds: float) -> None:
    """Sleep ``seconds``, or less if told to stop meanwhile (a Ctrl-C ends it within a tenth of a second)."""
    if isinstance(should_stop, threading.Event):
        should_stop.wait(seconds)
        return
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(STOP_POLL_INTERVAL, left))


def release(connection: LoopConnection) -> None:
    """Close a connection that still works; one that broke meanwhile is just dropped."""
    try:
        connection.release()
    except Exception:  # noqa: BLE001  (already broken: nothing left to close politely)
        connection.collect()
