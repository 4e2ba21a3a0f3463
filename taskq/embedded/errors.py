"""What the embedded broker raises about itself, under ``taskq.BrokerError``.

In a module of their own so the store, the file checks and the transport share them
without importing each other.
"""

from __future__ import annotations

from taskq.errors import BrokerError


class EmbeddedBrokerError(BrokerError):
    """Base of the errors the embedded broker raises on purpose."""


class BrokerBusyError(EmbeddedBrokerError):
    """The database stayed locked by other processes for longer than GIVE_UP_AFTER_SECONDS."""


class BrokerUnavailableError(EmbeddedBrokerError):
    """The broker file can't be reached for now (disk full, I/O error): retried like a broker that is down."""


class BrokerFileError(EmbeddedBrokerError):
    """The broker file is damaged, replaced, foreign, newer than this taskq or not writable.

    Never retried: another try would find the same file, and using it anyway would lose or
    overwrite the tasks it holds. The message names the file and what to do about it.
    """
