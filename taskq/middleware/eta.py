"""Eta re-delay: a message that arrives well before its eta goes back for another trip."""

from __future__ import annotations

import time

from taskq import delay
from taskq.middleware.delivery import Delivery, Redelay
from taskq.middleware.pipeline import Middleware, WorkerInfo


class EtaRedelay(Middleware):
    """The delay cascade holds a message at most one trip's longest wait (or it was sent around
    it): when it arrives early, it is sent again rather than held in the worker's memory,
    where a crash would lose its place and prefetch would block the queue behind it.
    Without the broker's delays (the in-memory broker) an early message just runs.
    """

    def __init__(self, broker_delays: bool = True) -> None:
        self.broker_delays = broker_delays

    def on_worker_start(self, worker: WorkerInfo) -> None:
        self.broker_delays = worker.broker_delays

    def before_run(self, delivery: Delivery) -> Redelay | None:
        envelope = delivery.envelope
        if envelope is None or envelope.eta is None or not self.broker_delays:
            return None
        return Redelay() if envelope.eta - time.time() > delay.EARLY_TOLERANCE else None
