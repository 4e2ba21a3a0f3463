"""``taskq scheduler``: fire the app's periodic tasks; run as many as you like, exactly one fires."""

from __future__ import annotations

import os
import signal
import socket
import threading
from datetime import datetime
from types import FrameType

import click

from taskq import __version__
from taskq.app import App
from taskq.cli.common import UserError, app_from_option, app_option, broker_option
from taskq.logs import LEVELS, configure_logging


@click.command()
@app_option
@broker_option
@click.option("--loglevel", type=click.Choice(LEVELS, case_sensitive=False), default="info", show_default=True)
@click.option(
    "--log-format", type=click.Choice(["auto", "console", "json"]), default="auto", show_default=True,
    help="console on a TTY, JSON lines otherwise, unless set.",
)
def scheduler(app_path: str, broker: str | None, loglevel: str, log_format: str) -> None:
    """Fire the app's @app.periodic schedules: leader election through the broker, so any number may run."""
    from taskq.scheduler import Scheduler

    configure_logging(loglevel, log_format)
    app = app_from_option(app_path, broker)
    if not app.schedules:
        raise UserError(f"app {app.name!r} has no schedules (@app.periodic or app.schedule)")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(banner(app), err=True)
    Scheduler(app, should_stop=stop).run()


def banner(app: App, now: datetime | None = None) -> str:
    """What starts, and when each schedule runs next."""
    from taskq.scheduler import schedule_lines

    return (
        f"taskq {__version__} scheduler on {socket.gethostname()} (pid {os.getpid()})\n"
        f"  app:       {app.name}\n"
        f"  broker:    {app.broker.masked_url}\n"
        f"  schedules:\n" + "\n".join(f"    . {line}" for line in schedule_lines(app, now))
    )
