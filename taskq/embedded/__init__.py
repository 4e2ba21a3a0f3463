"""The embedded broker: taskq with no broker server to install.

With no broker configured, taskq keeps its queues in ``$TASKQ_HOME/broker.db`` (default
``./.taskq/broker.db``), a SQLite file that every taskq process on the machine shares,
reached through an ordinary kombu transport so nothing else in taskq knows the difference.
"""

from __future__ import annotations

import os

from kombu.transport import TRANSPORT_ALIASES

from taskq import settings
from taskq.errors import BrokerBusyError, BrokerFileError, BrokerUnavailableError, EmbeddedBrokerError

__all__ = [
    "SCHEME",
    "BrokerBusyError",
    "BrokerFileError",
    "BrokerUnavailableError",
    "EmbeddedBrokerError",
    "default_database_path",
    "default_url",
    "register",
]

SCHEME = "taskq+sqlite"
_TRANSPORT = "taskq.embedded.transport:Transport"


def default_database_path() -> str:
    """Absolute, so processes started from another folder still find the same broker."""
    home = os.environ.get(settings.HOME_ENV) or settings.HOME
    return os.path.join(os.path.abspath(os.path.expanduser(home)), "broker.db")


def default_url() -> str:
    return f"{SCHEME}://{default_database_path()}"


def register() -> None:
    """Make kombu resolve our URLs; safe to call any number of times.

    kombu cuts a ``a+b://`` URL at the ``+``: the transport it looks up is ``taskq`` and
    the rest (``sqlite:///path``) becomes the hostname. Both names are registered, so
    ``Connection("taskq+sqlite://...")`` and ``Connection(transport="taskq+sqlite")`` work.
    """
    TRANSPORT_ALIASES[SCHEME] = _TRANSPORT
    TRANSPORT_ALIASES["taskq"] = _TRANSPORT


register()
