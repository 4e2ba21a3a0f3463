"""The Dramatiq broker and actors both the harness and the ``dramatiq`` worker command import.

Dramatiq has no RPC result backend: results go through its Results middleware with the Redis
backend, so Dramatiq's RPC column measures RabbitMQ one way and Redis the other (table notes say so).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from bench.common import BROKER_URL, REDIS_URL, RUN_ID, queue_name, record_mark

QUEUE = queue_name("dramatiq")
#: Result keys start with this, so the harness can delete exactly its own keys afterwards.
RESULTS_NAMESPACE = f"bench.dramatiq-results.{RUN_ID}"



def pika_url(kombu_url: str) -> str:
    """kombu writes the default vhost as ``//``, pika wants it percent-encoded (``/%2F``)."""
    parts = urlsplit(kombu_url)
    vhost = parts.path[1:] or "/"
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


# confirm_delivery: .send() waits for the publisher confirm, like taskq and the kombu baseline.
# Messages are always persistent (delivery_mode=2) and queues durable in Dramatiq's RabbitmqBroker.
broker = RabbitmqBroker(url=pika_url(BROKER_URL), confirm_delivery=True)
result_backend = RedisBackend(url=REDIS_URL, namespace=RESULTS_NAMESPACE, use_namespace_prefix_keys=True)
broker.add_middleware(Results(backend=result_backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop(mark: str | None = None) -> None:
    """No-op; the first/last pre-loaded message records its time (bench.common.record_mark)."""
    record_mark(mark)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop_result() -> None:
    """No-op whose (None) result is stored in Redis for the caller to block on."""
