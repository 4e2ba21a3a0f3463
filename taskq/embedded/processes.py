"""Who holds what: a process as the kernel knows it, and whether it still runs.

A reservation, a consumer or an exclusive queue names its owner by pid and kernel start
time, so a recycled pid is never mistaken for the dead owner.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class ProcessIdentity(NamedTuple):
    """A process as the kernel knows it: a pid alone is reused, pid + start time is not."""

    pid: int
    start: int


def _read_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks; None if it is gone or a zombie.

    A SIGKILLed child stays a zombie until its parent reaps it; it holds nothing any
    more, so it counts as dead.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(b")") + 2 :].split()  # the command name may contain spaces
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22 of proc(5); fields[0] is field 3


_HAS_PROC = os.path.isdir("/proc/self")
_identity_cache: dict[int, ProcessIdentity] = {}


def current_process() -> ProcessIdentity:
    pid = os.getpid()  # re-read on every call: a forked child is another owner
    identity = _identity_cache.get(pid)
    if identity is None:
        identity = ProcessIdentity(pid, (_read_start_time(pid) or 0) if _HAS_PROC else 0)
        _identity_cache[pid] = identity
    return identity


def is_alive(owner: ProcessIdentity) -> bool:
    if owner.pid == os.getpid():
        return owner == current_process()
    if _HAS_PROC:
        try:
            return _read_start_time(owner.pid) == owner.start
        except PermissionError:  # /proc hides it (hidepid): assume alive, never steal
            return True
    try:  # no /proc (macOS): pid reuse goes undetected there
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
