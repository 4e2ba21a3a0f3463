"""``taskq worker``: start a supervisor and its children on the app's queues."""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING

import click

from taskq import __version__
from taskq.app import App
from taskq.broker import is_embedded
from taskq.cli.common import UserError, app_from_option, app_option, broker_option, queue_names_option
from taskq.errors import ConfigurationError
from taskq.logs import LEVELS, configure_logging

if TYPE_CHECKING:
    from taskq.worker.supervisor import WorkerOptions
    from taskq.worker.metrics_export import MetricsExport


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
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
    help="Serve all children's Prometheus metrics at http://HOST:PORT/metrics (the metrics extra).",
)
@click.option("--scheduler", "with_scheduler", is_flag=True, help="Also run a scheduler for the app's @app.periodic schedules.")
def worker(
    app_path: str, queues: str | None, concurrency: int | None, broker: str | None,
    loglevel: str, log_format: str, heartbeat: float | None, metrics_port: int | None, with_scheduler: bool = False,
) -> None:
    """Run tasks: a supervisor and N child processes, prefetch 1, ack after each task."""
    from taskq.worker.supervisor import Supervisor, WorkerOptions

    configure_logging(loglevel, log_format)
    # Before the app is loaded: it may import prometheus_client, which must find its directory set.
    metrics = start_metrics(metrics_port) if metrics_port is not None else None
    try:
        app = app_from_option(app_path, broker)
        if heartbeat is not None:
            app.heartbeat = heartbeat
        if metrics is not None:
            metrics.add_to(app)
        if with_scheduler and not app.schedules:
            raise UserError(f"--scheduler: app {app.name!r} has no schedules (@app.periodic or app.schedule)")
        options = WorkerOptions(queues=queue_names_option(queues, app), concurrency=concurrency or os.cpu_count() or 1,
                                scheduler=with_scheduler)
        try:
            supervisor = Supervisor(app, options, metrics)
        except ConfigurationError as exc:
            raise UserError(str(exc)) from None
        click.echo(banner(app, options, metrics), err=True)
        exit_code = supervisor.run()
    finally:
        if metrics is not None:
            metrics.close()  # the children are gone: their files can go too
    sys.exit(exit_code)


def start_metrics(port: int) -> MetricsExport:
    from taskq.worker.metrics_export import MetricsExport

    try:
        return MetricsExport.start(port)
    except ConfigurationError as exc:
        raise UserError(str(exc)) from None


def scheduler_banner(app: App) -> str:
    from taskq.scheduler import schedule_lines

    lines = "".join(f"    . {line}\n" for line in schedule_lines(app))
    return f"  scheduler:   one more process; fires if it holds the app's lease (docs/periodic.md)\n{lines}"


def banner(app: App, options: WorkerOptions, metrics: MetricsExport | None = None) -> str:
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
        + (f"  metrics:     {metrics.url} (all children; PROMETHEUS_MULTIPROC_DIR={metrics.directory})\n"
           if metrics is not None else "")
        + (scheduler_banner(app) if options.scheduler else "")
        + f"  tasks:\n{tasks}"
    )
