"""A connection's doorbell, so a waiting consumer wakes when there is work, not on a poll."""

from __future__ import annotations

import os
import secrets
import select
import socket
import sys
import time

#: What a ring says: "a queue you watch got a message" or "a message somewhere expires
#: sooner than you think" (look again when the next one is due).
MESSAGE = b"!"
TIMER = b"T"


class WakeSocket:
    """A connection's doorbell: publishers ring it after committing to a watched queue.

    Datagrams to an abstract Unix address need no file and vanish with the process; a
    ring while nobody waits stays queued in the socket, so none is lost between "queue
    was empty" and "start waiting". Off Linux there is no bell and we poll instead.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.address: str | None = None
        self._sock: socket.socket | None = None
        self._idle_poll = 0.001
        if sys.platform.startswith("linux"):
            address = f"taskq-embedded-{self.pid}-{secrets.token_hex(8)}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind("\0" + address)
            except OSError:  # a sandbox without Unix sockets: poll instead
                sock.close()
                return
            sock.setblocking(False)
            # poll, not select: select fails on descriptors above 1023 in a busy process
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
            self._sock, self.address = sock, address

    @property
    def reliable(self) -> bool:
        """False when there is no socket: then nobody can tell us about a new timer."""
        return self._sock is not None

    def clear(self) -> bool:
        """Empty the socket; True if a TIMER ring was among what it held."""
        timer = False
        if self._sock is None:
            return timer
        try:
            while True:
                if self._sock.recv(64) == TIMER:
                    timer = True
        except (BlockingIOError, InterruptedError):
            pass
        return timer

    def wait(self, seconds: float) -> None:
        if self._sock is not None:
            self._poller.poll(max(seconds, 0) * 1000)
        else:
            time.sleep(max(min(seconds, self._idle_poll), 0))
            self._idle_poll = min(self._idle_poll * 2, 0.05)

    def delivered(self) -> None:
        self._idle_poll = 0.001

    def ring(self, addresses: list[str], what: bytes = MESSAGE) -> None:
        if self._sock is None:
            return
        for address in addresses:
            try:
                self._sock.sendto(what, "\0" + address)
            except OSError:  # full (it will wake anyway) or gone (its owner died)
                pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
