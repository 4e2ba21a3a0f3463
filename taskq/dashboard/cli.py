"""The ``taskq dashboard`` command: load the app, bind the port, serve the page until Ctrl-C.

Starlette and uvicorn are imported only when the command runs, so ``taskq`` needs them
only for this command (the ``dashboard`` extra).
"""

from __future__ import annotations

import socket

import click

from taskq.cli_common import UserError, app_from_option, app_option, broker_option


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
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDRESS", help="Address to listen on (the page has no login).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, metavar="PORT", help="Port to listen on; 0 picks a free one.")
def dashboard(app_path: str, broker: str | None, queues: str | None, host: str, port: int) -> None:
    """Serve a live web page of an app's queues, workers, throughput, failures and log lines."""
    try:
        from taskq.dashboard.app import serve
    except ImportError:
        raise UserError("taskq dashboard needs Starlette and uvicorn: pip install taskq[dashboard]") from None
    from taskq.logs import configure_logging

    configure_logging("info", "auto")
    app = app_from_option(app_path, broker)
    queue_names = [q.strip() for q in queues.split(",") if q.strip()] if queues else app.queue_names
    if not queue_names:
        raise UserError("-Q: no queue names given")
    sock = bind(host, port)
    address = sock.getsockname()
    shown_host = f"[{address[0]}]" if ":" in address[0] else address[0]
    click.echo(f"taskq dashboard: http://{shown_host}:{address[1]}/ ({app.name} on {app.broker.masked_url}); Ctrl-C to stop", err=True)
    serve(app, queue_names, sock)
