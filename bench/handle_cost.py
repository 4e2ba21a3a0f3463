"""The Python cost of one message through a worker child's per-message path, without a broker.

    python -m bench.handle_cost [N] [--cprofile]

The drain benchmark's figure for the children's CPU per task is mostly py-amqp and the
socket, and moves by tens of µs between runs on a shared machine; this isolates what
taskq itself adds per message (decode, the middleware hooks, run, settle, events), so a
change to that path can be measured in a second. The messages and the connection are
stand-ins (an ack that does nothing, a connection that is never read): a benchmark, not a
test of broker behaviour. The lifecycle-events middleware runs as in ``taskq worker`` with
nobody bound for task events, which is the drain benchmark's situation.
"""

from __future__ import annotations

import cProfile
import math
import pstats
import socket
import sys
import time
import uuid
from typing import Any

from taskq import App, topology
from taskq.logs import configure_logging
from taskq.message import CONTENT_TYPE, TaskMessage
from taskq.middleware.delivery import Delivery
from taskq.middleware.lifecycle_events import LifecycleEvents
from taskq.middleware.pipeline import WorkerInfo
from taskq.worker.child import ChildWorker
from taskq.worker.settle import Settler
from taskq.worker.setup import WorkerSetup

QUEUE = "bench.handle_cost"
app = App("handle-cost", broker="amqp://guest:guest@127.0.0.1:5672//")  # never connected to


@app.task(queue=QUEUE, ignore_result=True, name="handle_cost.noop")
def noop() -> None:
    pass


class StubMessage:
    """What the child reads of a kombu Message; ``ack`` only records that it was called."""

    content_encoding = "binary"

    def __init__(self, envelope: TaskMessage) -> None:
        self.body = envelope.body()
        self.headers = envelope.headers()
        self.properties: dict[str, Any] = {"delivery_mode": 2}
        self.content_type = CONTENT_TYPE
        self.acknowledged = False

    def ack(self) -> None:
        self.acknowledged = True


class StubConnection:
    """Channels for the settler; never read (a no-op task is over long before the watchdog looks)."""

    def channel(self) -> Any:
        return object()

    def drain_events(self, timeout: float) -> None:
        raise socket.timeout

    def heartbeat_check(self) -> None:
        pass


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv and argv[0].isdigit() else 50_000
    configure_logging("warning")
    events = LifecycleEvents.from_env(app.name, [QUEUE])
    worker = ChildWorker(WorkerSetup.from_app(app, [QUEUE], [events]), owns_process=True)
    setup = worker.setup
    worker.pipeline.notify("on_worker_start", WorkerInfo(setup.app_name, tuple(setup.queue_names), False, 0))
    worker._bind_task_log()  # as run() does once the middleware configured logging
    # Nobody is bound for task events, for good: what basic.return tells the broadcaster in the
    # drain benchmark, minus the probe it sends once a second.
    for kind in ("task.received", "task.started", "task.succeeded"):
        events.broadcaster._unheard_until[(topology.LIFECYCLE_EXCHANGE, kind)] = math.inf
    # Attached, with no heartbeat or flush due during the run.
    broadcaster = events.broadcaster
    broadcaster._channel, broadcaster._next_heartbeat, broadcaster._next_flush = object(), math.inf, math.inf
    connection: Any = StubConnection()
    settler = Settler(connection, worker.pipeline, queue_type="classic", broker_delays=False)
    rounds = 1 if "--cprofile" in argv else 7
    profiler = cProfile.Profile() if "--cprofile" in argv else None
    per_message = []
    for _ in range(rounds):
        messages = [StubMessage(TaskMessage(id=uuid.uuid4().hex, task="handle_cost.noop")) for _ in range(n)]
        cpu = time.process_time()
        if profiler:
            profiler.enable()
        for message in messages:
            worker.pipeline.notify("on_tick")  # the consuming loop ticks once before the message and once after
            worker._handle(settler, Delivery(QUEUE, message))
            worker.pipeline.notify("on_tick")
        if profiler:
            profiler.disable()
        per_message.append((time.process_time() - cpu) / n * 1e6)
        assert all(message.acknowledged for message in messages)
    per_message.sort()
    best, median = per_message[0], per_message[len(per_message) // 2]
    print(f"{n} messages x {rounds}: CPU {best:.1f} µs/message best, {median:.1f} median"
          " (taskq's own per-message path, no broker)")
    if profiler:
        stats = pstats.Stats(profiler)
        print(f"{stats.total_calls / n:.1f} function calls per message")  # type: ignore[attr-defined]
        stats.sort_stats(argv[argv.index("--sort") + 1] if "--sort" in argv else "tottime").print_stats(40)


if __name__ == "__main__":
    main(sys.argv[1:])
