"""Test your tasks without RabbitMQ: a real worker loop in a thread, on an in-memory broker.

    app.use_broker("memory://")
    with InlineWorker(app) as worker:
        result = add.delay(2, 3)
        worker.wait_until_idle()
        assert result.get(timeout=1) == 5

The worker is taskq's own child loop (prefetch 1, decode, dead-letter, ack after run),
run in a thread instead of a process, so what passes here is what the real worker does.
The pytest plugin (pytest_plugin.py) wraps it in fixtures.
"""

from __future__ import annotations

import threading
import time

from kombu.transport import memory

from taskq.app import App
from taskq.worker.child import ChildWorker, WorkerSetup

IDLE_TICK = 0.01


def reset_memory_broker() -> None:
    """Empty kombu's in-memory broker, whose queues and bindings are process-wide state."""
    memory.Channel.queues.clear()
    memory.Channel.events.clear()
    memory.Transport.global_state.clear()


class InlineWorker:
    """One worker child in a thread of the test process."""

    def __init__(self, app: App, queues: list[str] | None = None) -> None:
        self.app = app
        self.child = ChildWorker(WorkerSetup.from_app(app, queues or app.queue_names), tick=IDLE_TICK)
        self._thread = threading.Thread(target=self.child.run, name="taskq-inline-worker", daemon=True)

    def start(self) -> InlineWorker:
        self._thread.start()
        return self

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Return once every message sent before this call has been handled (and acked).

        Idle means the worker's own loop looked for a message and found none, twice after
        this call began: the second look started after anything sent before it.
        """
        target = self.child.idle_ticks + 2
        deadline = time.monotonic() + timeout
        while self.child.idle_ticks < target:
            if not self._thread.is_alive():
                raise RuntimeError("the inline worker stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker was still busy after {timeout} s")
            time.sleep(IDLE_TICK / 2)

    def stop(self, timeout: float = 10.0) -> None:
        self.child.stopping = True
        self._thread.join(timeout)

    def __enter__(self) -> InlineWorker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
