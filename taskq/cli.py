"""The ``taskq`` command. It only parses arguments and calls the library."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import click

from taskq import __version__
from taskq.app import App
from taskq.broker import is_embedded
from taskq.cli_common import UserError, app_from_option, app_option, broker_option
from taskq.cli_dead import dead
from taskq.cli_ops import OPERATOR_COMMANDS
from taskq.dashboard.cli import dashboard  # imports Starlette and uvicorn only when it runs
from taskq.errors import ConfigurationError, TaskqError
from taskq.logs import LEVELS, configure_logging



NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class OneLineErrorsGroup(click.Group):
    """The ``taskq`` group: a usage mistake (a typo'd command or option, a bad value) is one
    line on stderr and exit 2, like every ``UserError``, instead of click's usage block; any
    other TaskqError a command lets through is one line and exit 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except NO_ARGS_IS_HELP as exc:  # bare ``taskq``: the help, as click would show it
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (try '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except TaskqError as exc:  # the library said what went wrong (a damaged embedded broker file
            # says which and what to do): that line, no traceback
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=OneLineErrorsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taskq")
def main() -> None:
    """taskq: background jobs on RabbitMQ."""


@main.command()
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
    queue_names = [q.strip() for q in queues.split(",") if q.strip()] if queues else app.queue_names
    if not queue_names:
        raise UserError("-Q: no queue names given")
    options = WorkerOptions(queues=queue_names, concurrency=concurrency or os.cpu_count() or 1)
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


# The other commands live beside this file, each module a group of them.
for _command in (*OPERATOR_COMMANDS, dead, dashboard):
    main.add_command(_command)


if __name__ == "__main__":
    main()
