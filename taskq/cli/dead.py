"""``taskq dead list|replay|purge QUEUE``: look after a queue's dead letters.

Only argument parsing and printing; the work is in ``taskq.dead``.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable, Iterator

import click

from taskq.broker import Broker
from taskq.cli.common import UserError, broker_option, load, optional_app_option, yes_option
from taskq.dead import DeadLetter, count_dead, list_dead, purge, replay
from taskq.errors import NoSuchQueue

#: -A as all three commands take it: only to find the broker. Bound once, with the type of a
#: click option decorator, so the commands under it stay typed (click makes a new Option
#: each time it is applied).
app_for_its_broker: Callable[[Callable[..., None]], Callable[..., None]] = optional_app_option(
    "Take the broker from this App (env TASKQ_APP); optional."
)


def broker_from_options(app_path: str | None, broker: str | None) -> Broker:
    return load(app_path, broker).broker


@contextlib.contextmanager
def no_such_queue_is_a_user_error() -> Iterator[None]:
    """A queue that isn't there is the caller's mistake (exit 2); other TaskqErrors are exit 1 (taskq/cli/__init__.py)."""
    try:
        yield
    except NoSuchQueue as exc:
        raise UserError(str(exc)) from None


def describe(letter: DeadLetter) -> str:
    failure = f"  {letter.exc_type}: {letter.exc_message}" if letter.exc_type else (f"  {letter.detail}" if letter.detail else "")
    attempts = "" if letter.attempts is None else f"  attempts={letter.attempts}"
    return f"{letter.task_id}  {letter.task}  reason={letter.reason}{attempts}  from={letter.original_queue}{failure}"


@click.group()
def dead() -> None:
    """Dead letters: messages a worker could not run, parked in <queue>.dead."""


@dead.command("list")
@click.argument("queue")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Show at most this many.")
@click.option("--traceback", "show_traceback", is_flag=True,
              help="Under each task that failed, the traceback its worker recorded.")
@app_for_its_broker
@broker_option
def list_command(queue: str, limit: int, show_traceback: bool, app_path: str | None, broker: str | None) -> None:
    """Show QUEUE.dead's messages, oldest first; the queue is left exactly as it was."""
    with no_such_queue_is_a_user_error():
        total, letters = list_dead(broker_from_options(app_path, broker), queue, limit)
    for letter in letters:
        click.echo(describe(letter))
        if show_traceback and letter.traceback:
            # Indented, so each letter's own line still starts at the left margin.
            click.echo(textwrap.indent(letter.traceback.rstrip("\n"), "    "))
    shown = f"{len(letters)} of {total}" if len(letters) < total else str(total)
    click.echo(f"{shown} dead letter(s) in {queue}.dead", err=True)


@dead.command("replay")
@click.argument("queue")
@click.option("--id", "task_id", default=None, metavar="TASK_ID", help="Replay this task's message only.")
@click.option("--all", "replay_all", is_flag=True, help="Replay every message.")
@app_for_its_broker
@broker_option
def replay_command(queue: str, task_id: str | None, replay_all: bool, app_path: str | None, broker: str | None) -> None:
    """Send dead letters back to their original queue (confirmed, then removed from .dead)."""
    if bool(task_id) == replay_all:
        raise UserError("give exactly one of --id TASK_ID or --all")
    with no_such_queue_is_a_user_error():
        replayed = replay(broker_from_options(app_path, broker), queue, task_id)
    if task_id and not replayed:
        raise UserError(f"no dead letter with id {task_id!r} in {queue}.dead")
    for letter in replayed:
        click.echo(f"replayed {letter.task_id} {letter.task} -> {letter.original_queue}")
    click.echo(f"{len(replayed)} message(s) replayed", err=True)


@dead.command("purge")
@click.argument("queue")
@app_for_its_broker
@broker_option
@yes_option
def purge_command(queue: str, app_path: str | None, broker: str | None, yes: bool) -> None:
    """Delete every message in QUEUE.dead (after asking, unless --yes): they are gone for good."""
    dead_broker = broker_from_options(app_path, broker)
    with no_such_queue_is_a_user_error():
        if not yes:
            click.confirm(f"Delete the {count_dead(dead_broker, queue)} messages in {queue}.dead?", abort=True)
        count = purge(dead_broker, queue)
    click.echo(f"purged {count} message(s) from {queue}.dead", err=True)
