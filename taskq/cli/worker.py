"""``taskq worker``: start a supervisor and its children on the app's queues."""

from __future__ import annotations

import os
import socket
import sys

import click

from taskq import __version__
from taskq.app import App
from taskq.broker import is_embedded
from taskq.cli.common import UserError, app_from_option, app_option, broker_option, queue_names_option
from taskq.errors import ConfigurationError
from taskq.logs import LEVELS, configure_logging


@click.command()
@app_option
@click.option("-Q", "--queues", default=None, metavar="Q1,Q2", help="Queues to consume (default: all of the app's).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None, help="Child processes (default: CPUs).")
@broker_option
@click.option("--loglevel", type=click.Choice(LEVELS, case_sensitive=False), default="info", show_default=True)
@click.option(
    "--log-format", type=click.Choice(["auto", "console", "json"]), default="auto", show_default=True,
    help="console on a TTY, JSON lines otherwise, unless set.",
)
@click.option(
    "--heartbeat", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
    help="AMQP heartbeat interval of the children's connections (default: the app's, 30).",
)
def worker(
    app_path: str, queues: str | None, concurrency: int | None, broker: str | None,
    loglevel: str, log_format: str, heartbeat: float | None,
) -> None:
    """Run tasks: a supervisor and N child processes, prefetch 1, ack after each task."""
    from taskq.worker import Supervisor, WorkerOptions

    configure_logging(loglevel, log_format)
    app = app_from_option(app_path, broker)
    if heartbeat is not None:
        app.heartbeat = heartbeat
    options = WorkerOptions(queues=queue_names_option(queues, app), concurrency=concurrency or os.cpu_count() or 1)
    try:
        supervisor = Supervisor(app, options)
    except ConfigurationError as exc:
        raise UserError(str(exc)) from None
    click.echo(banner(app, options), err=True)
    sys.exit(supervisor.run())


def banner(app: App, options) -> str:
    tasks = "\n".join(f"    . {name}" for name in sorted(app.tasks)) or "    (none)"
    broker = app.broker.masked_url
    if is_embedded(app.broker.url):
        broker += "\n               (the EMBEDDED broker: a SQLite file for one machine, no server;\n" \
                  "                set --broker or TASKQ_BROKER_URL to use RabbitMQ)"
    return (
        f"taskq {__version__} worker on {socket.gethostname()} (pid {os.getpid()})\n"
        f"  app:         {app.name}\n"
        f"  broker:      {broker}\n"
        f"  queues:      {', '.join(options.queues)}\n"
        f"  concurrency: {options.concurrency} (prefetch 1 each, ack after run)\n"
        f"  tasks:\n{tasks}"
    )
