"""The ``taskq dashboard`` command: load the app, bind the port, serve the page until Ctrl-C.

Starlette and uvicorn are imported only when the command runs, so ``taskq`` needs them
only for this command (the ``dashboard`` extra).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import click

from taskq.cli_common import UserError, app_from_option, app_option, broker_option

TOKEN_ENV = "TASKQ_DASHBOARD_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``--host`` keeps the page on this machine ("localhost" or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_names(host: str, bound_address: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names a request may use: loopback, what we listen on, and what the operator added.

    A wildcard address (0.0.0.0, ::) serves every interface, so this machine's own name and
    addresses count too.
    """
    names = {*LOOPBACK_NAMES, host, bound_address, *extra}
    if ipaddress.ip_address(bound_address).is_unspecified:
        names.update((socket.gethostname(), socket.getfqdn()))
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
        except OSError:  # a host without a resolvable name: its addresses can still be allowed by name
            pass
    return sorted(host_header_name(name) for name in names if name)


def host_header_name(name: str) -> str:
    """How ``name`` appears in a Host header: IPv6 literals in brackets, as Starlette parses them."""
    return f"[{name}]" if ":" in name and not name.startswith("[") else name.lower()


def bind(host: str, port: int) -> socket.socket:
    """Our own listening socket: a port in use is a one-line user error, and port 0 picks a free one."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


@click.command()
@app_option
@broker_option
@click.option("-Q", "--queues", default=None, metavar="Q1,Q2", help="These queues (default: all of the app's).")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on; one beyond this machine needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, metavar="PORT", help="Port to listen on; 0 picks a free one.")
@click.option("--token", envvar=TOKEN_ENV, show_envvar=True, default=None, metavar="TOKEN",
              help="Require this secret of every request (open the page once as /?token=TOKEN). "
              "Prefer the variable: a command line is visible to every user of the machine.")
@click.option("--allow-host", "extra_hosts", multiple=True, metavar="NAME",
              help="Also accept requests addressed to NAME (the name a proxy or DNS gives the page); repeatable.")
def dashboard(app_path: str, broker: str | None, queues: str | None, host: str, port: int, token: str | None,
              extra_hosts: tuple[str, ...]) -> None:
    """Serve a live web page of an app's queues, workers, throughput, failures and log lines.

    The page can replay and purge queues and has no login of its own, so without a token
    it listens only on a loopback address.
    """
    try:
        from taskq.dashboard.app import serve
    except ImportError:
        raise UserError("taskq dashboard needs Starlette and uvicorn: pip install 'taskq-rabbitmq[dashboard]'") from None
    from taskq.logs import configure_logging

    configure_logging("info", "auto")
    app = app_from_option(app_path, broker)
    queue_names = [q.strip() for q in queues.split(",") if q.strip()] if queues else app.queue_names
    if not queue_names:
        raise UserError("-Q: no queue names given")
    if not token and not is_loopback(host):
        raise UserError(f"--host {host} is reachable from other machines and the page can purge queues: "
                        f"give it a --token (or {TOKEN_ENV})")
    sock = bind(host, port)
    address = sock.getsockname()
    shown_host = f"[{address[0]}]" if ":" in address[0] else address[0]
    click.echo(f"taskq dashboard: http://{shown_host}:{address[1]}/ ({app.name} on {app.broker.masked_url}); Ctrl-C to stop", err=True)
    serve(app, queue_names, sock, allowed_hosts=served_names(host, address[0], extra_hosts), token=token)
