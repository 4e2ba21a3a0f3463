"""Which RabbitMQ node on this host serves a given AMQP port, found in milliseconds.

``rabbitmqctl`` talks to a node by Erlang name, not by port: run plainly it describes the
machine's default node, whichever broker the app uses. Before trusting its numbers we
prove the node is the app's broker, without paying another Erlang start-up (1-3 s): the
kernel says which process listens on the AMQP port (``/proc/net/tcp*``, ``/proc/PID/fd``),
that process's other listening ports include its Erlang distribution port, and epmd (the
Erlang port mapper) names the node registered on that port. Anything unreadable (another
user's process, no /proc, no epmd) means "not proven", never a guess.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

EPMD_PORT = 4369
EPMD_NAMES_REQUEST = 110
TCP_LISTEN = "0A"


def listening_inodes() -> dict[int, int]:
    """{socket inode: port} of every listening TCP socket on this host."""
    inodes: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == TCP_LISTEN:
                inodes[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return inodes


def ports_of_listener(port: int) -> set[int]:
    """Every port listened on by the process that listens on ``port`` (empty if it can't be read)."""
    inodes = listening_inodes()
    wanted = {inode for inode, p in inodes.items() if p == port}
    if not wanted:
        return set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        held = socket_inodes_of(int(pid))
        if held & wanted:
            return {inodes[inode] for inode in held if inode in inodes}
    return set()


def socket_inodes_of(pid: int) -> set[int]:
    held: set[int] = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            target = os.readlink(fd.path)
            if target.startswith("socket:["):
                held.add(int(target[8:-1]))
    except OSError:  # gone, or not ours to read
        pass
    return held


def epmd_names(timeout: float = 1.0) -> dict[int, str]:
    """{distribution port: short node name} registered with this host's epmd."""
    try:
        with socket.create_connection(("127.0.0.1", EPMD_PORT), timeout=timeout) as connection:
            connection.sendall(struct.pack(">HB", 1, EPMD_NAMES_REQUEST))
            reply = b""
            while chunk := connection.recv(4096):
                reply += chunk
    except OSError:
        return {}
    names: dict[int, str] = {}
    for line in reply[4:].decode(errors="replace").splitlines():
        parts = line.split()  # "name rabbit at port 25672"
        if len(parts) == 5 and parts[0] == "name" and parts[4].isdigit():
            names[int(parts[4])] = parts[1]
    return names


def node_short_name_serving(port: int) -> str | None:
    """The short Erlang name of the local node listening on AMQP ``port``, if it can be proven."""
    ports = ports_of_listener(port)
    if not ports:
        return None
    names = epmd_names()
    matches = {names[p] for p in ports if p in names}
    return matches.pop() if len(matches) == 1 else None


def node_names_to_try(short_name: str) -> list[str]:
    """Full names the node may carry: epmd knows only the part before ``@``.

    A wrong guess only makes ``rabbitmqctl`` fail to connect (a full name must match
    exactly), so trying both never reaches another node.
    """
    configured = os.environ.get("RABBITMQ_NODENAME", "")
    names = [configured] if configured.split("@")[0] == short_name and "@" in configured else []
    names += [f"{short_name}@localhost", f"{short_name}@{socket.gethostname().split('.')[0]}"]
    return list(dict.fromkeys(names))


def node_listens_on(node: str, port: int) -> bool:
    """Whether the local node named ``node`` is the one listening on AMQP ``port``."""
    return node_short_name_serving(port) == node.split("@")[0]
