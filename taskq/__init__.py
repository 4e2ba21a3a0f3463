"""taskq: background jobs on RabbitMQ — durable queues, fair dispatch, results over RPC."""

from taskq.app import App
from taskq.canvas import GroupResult, Signature, chain, chord, group
from taskq.context import current
from taskq.errors import (
    BrokerError,
    ConfigurationError,
    EncodeError,
    GroupError,
    PublishError,
    ResultLost,
    Retry,
    StateStoreError,
    SoftTimeLimitExceeded,
    TaskError,
    TaskRevoked,
    TaskqError,
    TimeLimitExceeded,
    Unroutable,
)
from taskq.logs import get_logger
from taskq.middleware import Delivery, Middleware
from taskq.results import AsyncResult
from taskq.state import StoredResult, TaskState
from taskq.task import Task

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "BrokerError",
    "ConfigurationError",
    "Delivery",
    "EncodeError",
    "GroupError",
    "GroupResult",
    "Middleware",
    "PublishError",
    "ResultLost",
    "Signature",
    "Retry",
    "SoftTimeLimitExceeded",
    "StateStoreError",
    "StoredResult",
    "Task",
    "TaskError",
    "TaskRevoked",
    "TaskState",
    "TaskqError",
    "TimeLimitExceeded",
    "Unroutable",
    "chain",
    "chord",
    "current",
    "get_logger",
    "group",
]
