"""The ``taskq`` command: click commands only. Each parses its arguments, calls the library
and prints the outcome; a mistake is one line on stderr, never a traceback.

One module per group of commands (worker, scheduler, ops, result, revoke, dead, dashboard), all sharing common.py;
none imports another, and the library never imports this package.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from taskq import __version__
from taskq.cli.dashboard import dashboard  # imports Starlette and uvicorn only when it runs
from taskq.cli.dead import dead
from taskq.cli.ops import OPERATOR_COMMANDS
from taskq.cli.result import result
from taskq.cli.revoke import revoke
from taskq.cli.scheduler import scheduler
from taskq.cli.worker import worker
from taskq.errors import TaskqError

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


for _command in (worker, scheduler, *OPERATOR_COMMANDS, result, revoke, dead, dashboard):
    main.add_command(_command)
