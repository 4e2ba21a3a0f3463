"""The Celery app both the harness and ``celery worker`` import: the shared settings, spelled in
Celery's configuration keys (bench/README.md lists them next to the other systems')."""

from __future__ import annotations

from celery import Celery

from bench.common import BROKER_URL, queue_name, record_mark

QUEUE = queue_name("celery")

app = Celery("bench", broker=BROKER_URL, backend="rpc://")
SETTINGS = dict(
    # JSON bodies, like every system here (no pickle anywhere).
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Durable queue, persistent messages (Celery's defaults, stated so nobody has to look).
    task_default_queue=QUEUE,
    task_default_delivery_mode="persistent",
    # Ack after the task ran; one message per pool process: the worker's channel prefetch is
    # multiplier x concurrency = 1 x 2 (applied channel-wide, which is how Celery does it).
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    # .delay() waits for the broker's publisher confirm, like taskq and the kombu baseline.
    broker_transport_options={"confirm_publish": True},
    # Results over AMQP to a per-client reply queue: Celery's RPC backend.
    result_persistent=False,
    # Features taskq doesn't have and that only add broker traffic: remote control (a pidbox
    # queue and consumer per worker) and events.
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
)
app.conf.update(SETTINGS)

# The reference row "celery, no confirms": Celery's default .delay(), which does not wait for
# the broker. Same settings otherwise; its messages go to the same queue, for the same task.
unconfirmed_app = Celery("bench", broker=BROKER_URL)
unconfirmed_app.conf.update({**SETTINGS, "broker_transport_options": {}})


@app.task(ignore_result=True)
def noop(mark: str | None = None) -> None:
    """No-op; the first/last pre-loaded message records its time (bench.common.record_mark)."""
    record_mark(mark)


unconfirmed_noop = unconfirmed_app.task(name=noop.name, ignore_result=True)(noop.run)


@app.task
def noop_result() -> None:
    """No-op whose (None) result travels back over the RPC backend."""
