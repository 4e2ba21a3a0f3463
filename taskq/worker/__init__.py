"""The worker: a supervisor process (supervisor.py) and its children (child.py)."""

from taskq.worker.supervisor import Supervisor, WorkerOptions

__all__ = ["Supervisor", "WorkerOptions"]
