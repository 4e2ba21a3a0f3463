"""What makes a unit test a unit test, enforced: it stays inside its own process.

tests/unit/conftest.py closes, for every test under tests/unit, each way out a test of
taskq could take: a TCP connection (RabbitMQ, or any server), the embedded broker's SQLite
file, a subprocess, a fork. Trying one raises :class:`ReachedOutside`, and the attempt is
also recorded, so a test still fails when the code under test caught the error (kombu and
py-amqp retry connection errors; that is why the error is not an ``OSError``).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
from typing import Any, NoReturn

import pytest

#: The socket families of the network; a Unix socket stays open (it leaves no machine).
NETWORK_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class ReachedOutside(AssertionError):
    """A unit test reached for the network, a broker or another process."""


class Isolation:
    """The closed ways out of one test, and every attempt to take one of them."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def refuse(self, what: str) -> NoReturn:
        self.attempts.append(what)
        raise ReachedOutside(f"a unit test tried to {what}; a test that needs this belongs in tests/integration")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Close every way out for as long as ``monkeypatch`` lasts (one test)."""
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex

        def connect(sock: socket.socket, address: Any) -> None:
            if sock.family in NETWORK_FAMILIES:
                self.refuse(f"connect to {address!r}")
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            if sock.family in NETWORK_FAMILIES:
                self.refuse(f"connect to {address!r}")
            return real_connect_ex(sock, address)

        def open_sqlite(database: Any, *args: Any, **kwargs: Any) -> NoReturn:
            self.refuse(f"open the SQLite file {database!r} (the embedded broker's store)")

        def start_process(popen: subprocess.Popen, args: Any, *more: Any, **kwargs: Any) -> NoReturn:
            self.refuse(f"start the process {args!r}")

        def fork() -> NoReturn:
            self.refuse("fork")

        def posix_spawn(path: Any, *args: Any, **kwargs: Any) -> NoReturn:
            self.refuse(f"spawn {path!r}")

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(sqlite3, "connect", open_sqlite)
        monkeypatch.setattr(subprocess.Popen, "__init__", start_process)  # run(), check_output(), ... too
        monkeypatch.setattr(os, "fork", fork)
        monkeypatch.setattr(os, "posix_spawn", posix_spawn)
