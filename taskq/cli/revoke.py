"""``taskq revoke ID [--terminate]``: revoke a task of the app (docs/revoke.md).

Only argument parsing and printing; the work is ``App.revoke`` (taskq/revocation.py).
"""

from __future__ import annotations

import click

from taskq.cli.common import UserError, app_option, broker_option, load
from taskq.errors import InvalidTaskId


@click.command()
@click.argument("task_id", metavar="ID")
@app_option
@broker_option
@click.option("--terminate", is_flag=True, help="Also stop it if it is running (its worker child is replaced).")
def revoke(task_id: str, app_path: str, broker: str | None, terminate: bool) -> None:
    """Revoke task ID: dead-lettered (reason revoked) when a worker meets it; with --terminate, stopped if running."""
    app = load(app_path, broker)
    try:
        app.revoke(task_id, terminate=terminate)  # a broker that never confirmed: PublishError, one line
    except InvalidTaskId as exc:
        raise UserError(str(exc)) from None
    click.echo(f"revoked {task_id}{' (terminate)' if terminate else ''}")
