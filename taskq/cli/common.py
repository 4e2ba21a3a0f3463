"""What every ``taskq`` subcommand shares: the -A and --broker options and one-line user errors.

In a module of its own so the command modules (worker.py, ops.py, dead.py, dashboard.py)
import it, and never each other.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import click

from taskq import settings
from taskq.app import App
from taskq.errors import ConfigurationError
from taskq.loader import load_app


Command = TypeVar("Command", bound=Callable[..., object])


class UserError(click.ClickException):
    """One line on stderr and exit status 2: a mistake of the caller's, never a traceback."""

    exit_code = 2


def app_from_option(path: str, broker: str | None) -> App:
    try:
        app = load_app(path)
    except ConfigurationError as exc:
        raise UserError(str(exc)) from None
    if broker:
        app.use_broker(broker)
    return with_usable_broker(app)


def with_usable_broker(app: App) -> App:
    """The app, once its broker URL is known to be one taskq can use (made now, not on first
    use): a bad URL is then a one-line user error before the command starts anything."""
    try:
        app.broker  # noqa: B018  (made on first use; checks the URL)
    except ConfigurationError as exc:
        raise UserError(str(exc)) from None
    return app


app_option = click.option(
    "-A", "--app", "app_path", envvar=settings.APP_ENV, required=True, metavar="MODULE:APP",
    help="The App to load, e.g. examples.shop:app (env TASKQ_APP).",
)
yes_option = click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
broker_option = click.option(
    "--broker", envvar=settings.BROKER_URL_ENV, default=None, metavar="URL",
    help="Broker URL; overrides the app's (env TASKQ_BROKER_URL).",
)


def optional_app_option(help_text: str) -> Callable[[Command], Command]:
    """-A for commands that work without an app too (they then only need a broker)."""
    return click.option("-A", "--app", "app_path", envvar=settings.APP_ENV, default=None, metavar="MODULE:APP", help=help_text)


def load(app_path: str | None, broker: str | None) -> App:
    """The -A app, or a bare App on the broker given, for commands that only need a broker."""
    if app_path:
        return app_from_option(app_path, broker)
    return with_usable_broker(App(broker=broker))



def queue_names_option(queues: str | None, app: App) -> list[str]:
    """The queues a ``-Q Q1,Q2`` names, else all of the app's; none at all is a user error."""
    names = split_queue_names(queues) if queues else app.queue_names
    if not names:
        raise UserError("-Q: no queue names given")
    return names


def split_queue_names(queues: str) -> list[str]:
    """``-Q Q1,Q2`` as a list of names (blanks dropped)."""
    return [name.strip() for name in queues.split(",") if name.strip()]
