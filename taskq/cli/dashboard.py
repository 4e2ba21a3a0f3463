"""``taskq dashboard``: load the app, bind the port, serve the page until Ctrl-C.

Starlette and uvicorn are imported only when the command runs, so ``taskq`` needs them
only for this command (the ``dashboard`` extra).
"""

from __future__ import annotations

import click

from taskq import settings
from taskq.cli.common import UserError, app_from_option, app_option, broker_option, queue_names_option
from taskq.dashboard.address import bind, is_loopback, served_names, shown_url
from taskq.errors import ConfigurationError


@click.command()
@app_option
@broker_option
@click.option("-Q", "--queues", default=None, metavar="Q1,Q2", help="These queues (default: all of the app's).")
@click.option("--host", default=settings.DASHBOARD_HOST, show_default=True, metavar="ADDRESS",
              help="Address to listen on; one beyond this machine needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=settings.DASHBOARD_PORT, show_default=True, metavar="PORT", help="Port to listen on; 0 picks a free one.")
@click.option("--token", envvar=settings.DASHBOARD_TOKEN_ENV, show_envvar=True, default=None, metavar="TOKEN",
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
    queue_names = queue_names_option(queues, app)
    if not token and not is_loopback(host):
        raise UserError(f"--host {host} is reachable from other machines and the page can purge queues: "
                        f"give it a --token (or {settings.DASHBOARD_TOKEN_ENV})")
    try:
        sock = bind(host, port)
    except ConfigurationError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"taskq dashboard: {shown_url(sock)} ({app.name} on {app.broker.masked_url}); Ctrl-C to stop", err=True)
    serve(app, queue_names, sock, allowed_hosts=served_names(host, sock.getsockname()[0], extra_hosts), token=token)
