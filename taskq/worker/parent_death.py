"""A worker child dies with its supervisor.

An orphaned child would consume on unsupervised: nobody replaces it when it dies, keeps
``-c``, or passes it the operator's stop signal, and a restarted worker runs its own
children beside it. So an orphan abandons its task rather than finishing it: it exits
without the ack, the broker requeues the message, and a supervised child runs it again,
at least once, as after any other killed child.

On Linux the kernel does it (``PR_SET_PDEATHSIG``: SIGKILL when the supervisor dies), which
works even while a task holds the GIL in C code. Elsewhere a thread compares
``getppid()`` with the supervisor's pid, as an orphan is adopted by another process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

import structlog

log = structlog.get_logger("taskq.worker")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_ORPHANED = 4  # nobody is left to read it; distinct from limits.EXIT_TIME_LIMIT (3) for a tracer
PARENT_POLL_INTERVAL = 1.0  # seconds between getppid() checks, where the kernel can't tell us


def die_with_parent(parent_pid: int) -> None:
    """Have this process end when ``parent_pid``, its parent, does; at once if it already has."""
    if not (sys.platform.startswith("linux") and kill_me_when_parent_dies()):
        exit_when_orphaned(parent_pid)
    # The parent may have died between the fork and the request above, which then came
    # too late to fire: we would already be someone else's child.
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)


def kill_me_when_parent_dies() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent dies; False if it can't."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # no libc to load, or no prctl in it
        return False


def exit_when_orphaned(parent_pid: int, interval: float = PARENT_POLL_INTERVAL) -> threading.Thread:
    """Start a thread that ends the process once ``getppid()`` is no longer ``parent_pid``."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        log.warning("supervisor gone, exiting; the broker requeues the running task", supervisor_pid=parent_pid)
        os._exit(EXIT_ORPHANED)

    thread = threading.Thread(target=watch, name="taskq-parent-watch", daemon=True)
    thread.start()
    return thread
