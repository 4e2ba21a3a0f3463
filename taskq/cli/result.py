"""``taskq result ID [--wait] [--timeout S]``: a task's state and result from the app's state store.

Only argument parsing and printing; the work is in ``taskq.state``.
"""

from __future__ import annotations

import datetime
import json
import sys
import textwrap
from typing import Any

import click

from taskq.cli.common import UserError, broker_option, load, optional_app_option
from taskq.errors import TaskError
from taskq.state import StateStore, StoredResult, TaskState, open_store
from taskq.state.records import as_json

#: Exit status of ``--wait`` when the task failed, was dead-lettered or revoked (as ``taskq call
#: --wait``); 2 is a usage mistake.
EXIT_TASK_FAILED = 1
#: Exit status of ``--wait`` when the task was not done in time.
EXIT_TIMEOUT = 4


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds")


def summary(result: StoredResult) -> str:
    record = result.record
    parts = [result.id, record.task or "?", result.state.value]
    if record.attempts:
        parts.append(f"attempt={record.attempts}")
    if record.worker:
        parts.append(f"worker={record.worker}")
    if record.progress is not None:
        parts.append(f"progress={record.progress:.0%}")
    parts.extend(f"{key}={value}" for key, value in record.meta.items())
    if record.reason:
        parts.append(f"reason={record.reason}")
    return "  ".join(parts)


def store_from_options(app_path: str | None, results: str | None, broker: str | None) -> StateStore:
    if results:
        return open_store(results, broker_url=broker)
    if not app_path:
        raise UserError("say which state store: -A MODULE:APP (an App with results=...) or --results URL")
    app = load(app_path, broker)
    if app.results is None:
        raise UserError(f"the app {app_path} has no state store: give it results=... or pass --results URL")
    return app.results.store()


@click.command("result")
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Wait until the task is done, then print its value or its error.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="With --wait: give up after this long (exit 4). Default: wait for ever.")
@click.option("--json", "json_output", is_flag=True, help="Print the whole record as one JSON object.")
@click.option("--results", default=None, metavar="URL", help="The state store's URL; overrides the app's.")
@optional_app_option("The App whose state store to read (env TASKQ_APP).")
@broker_option
def result(task_id: str, wait: bool, timeout: float | None, json_output: bool, results: str | None,
           app_path: str | None, broker: str | None) -> None:
    """Show task TASK_ID's state, progress, attempts and result, from any machine.

    A task the store has no record of is PENDING: not taken by a worker yet, never sent, or
    expired after the retention.
    """
    if timeout is not None and not wait:
        raise UserError("--timeout goes with --wait")
    stored = StoredResult(store_from_options(app_path, results, broker), task_id)
    value: Any = None
    failure: TaskError | None = None
    if wait:
        try:
            value = stored.get(timeout)
        except TimeoutError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_TIMEOUT)
        except TaskError as exc:
            failure = exc
    if json_output:
        click.echo(json.dumps(as_json(stored.record), default=repr))
    else:
        click.echo(summary(stored))
        record = stored.record
        click.echo(f"  received {when(record.received_at)}  started {when(record.started_at)}  "
                   f"finished {when(record.finished_at)}")
        reply = record.outcome()
        if stored.state is TaskState.SUCCEEDED and reply is not None and reply.ok:
            click.echo(json.dumps(reply.result if not wait else value, default=repr))
        elif reply is not None and not reply.ok:
            click.echo(f"  {reply.exc_type}: {reply.exc_message}")
            if reply.traceback:
                click.echo(textwrap.indent(reply.traceback.rstrip("\n"), "    "))
    if failure is not None:
        sys.exit(EXIT_TASK_FAILED)
