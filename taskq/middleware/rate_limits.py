"""Rate limits that hold across the cluster: the ``rate_limit`` task option ("10/s", "600/m", "3600/h").

In ``before_run`` the worker reserves the task's next slot in the state store (GCRA,
taskq/state/limits.py), shared by every worker of every machine. A slot that is now runs the
task; a slot in the future sends the message back with that slot as its eta and acks
(``Redelay(eta=...)``), so no worker sleeps, busy-loops or holds a message unacked for long
(RabbitMQ's consumer_timeout). The slot travels in the ``x-taskq-rate-slot`` header, so the
message that comes back at its slot runs without reserving another; one that comes back more
than ``RATE_LIMIT_MAX_LATENESS`` after it (stuck behind a backlog) takes a new slot, so a
backlog draining does not start its late messages in one bunch.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Mapping

from taskq import settings
from taskq.middleware.delivery import Delivery, Redelay
from taskq.middleware.pipeline import Middleware, WorkerInfo
from taskq.state.limits import RateSlots, rate_slots
from taskq.state.store import StateStore

#: The header a re-delayed message carries: the slot it already holds.
SLOT_HEADER = "x-taskq-rate-slot"

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: str) -> float:
    """Seconds between two starts for ``"N/s"``, ``"N/m"`` or ``"N/h"`` (ValueError otherwise)."""
    count, sep, period = str(value).partition("/")
    try:
        number = float(count)
    except ValueError:
        number = float("nan")
    if not sep or period not in PERIODS or not number > 0 or number == float("inf"):
        raise ValueError(f"rate_limit must look like '10/s', '600/m' or '3600/h' with a count above 0, not {value!r}")
    return PERIODS[period] / number


class RateLimits(Middleware):
    """``rate_limit="10/s"``: at most 10 starts a second of that task, in total, on every worker."""

    task_options: ClassVar[Mapping[str, Any]] = {"rate_limit": None}

    def __init__(self, store: Callable[[], StateStore], broker_delays: bool = True) -> None:
        self.store = store
        self.broker_delays = broker_delays
        self._slots: RateSlots | None = None
        self._intervals: dict[str, float] = {}

    def check_task_options(self, options: Mapping[str, Any]) -> None:
        if options.get("rate_limit") is not None:
            parse_rate(options["rate_limit"])

    def on_worker_start(self, worker: WorkerInfo) -> None:
        self.broker_delays = worker.broker_delays

    def before_run(self, delivery: Delivery) -> Redelay | None:
        task, envelope = delivery.task, delivery.envelope
        if task is None or envelope is None:
            return None
        rate = task.options.settings.get("rate_limit")
        if rate is None or not self.broker_delays:  # without broker delays there is nowhere to wait: runs
            return None
        interval = self._intervals.get(task.name)
        if interval is None:
            interval = self._intervals[task.name] = parse_rate(rate)
        held = (delivery.message.headers or {}).get(SLOT_HEADER)
        if isinstance(held, (int, float)) and time.time() - held <= settings.RATE_LIMIT_MAX_LATENESS:
            return None  # came back at the slot it holds
        # No slot yet, or one missed by more than the lateness allowed (it waited behind a
        # backlog in the work queue): a new one, so late messages don't start all together.
        if self._slots is None:
            self._slots = rate_slots(self.store())
        slot = self._slots.reserve(f"{task.name}", interval)
        if slot - time.time() <= settings.RATE_LIMIT_TOLERANCE:
            return None
        return Redelay(eta=slot, headers={SLOT_HEADER: slot})

