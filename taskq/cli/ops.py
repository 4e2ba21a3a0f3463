"""The operator's commands: logs, events, status, purge, call.

Registered on the ``taskq`` group by taskq/cli/__init__.py; the listening, filtering and
status-taking they do is library code (taskq.subscriber, taskq.log_tail, taskq.status).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import IO, Any, Callable, Iterator

import click

from taskq import settings, topology
from taskq.app import App
from taskq.broker import connection_problem, queue_counts
from taskq.cli.common import UserError, app_option, broker_option, load, optional_app_option, split_queue_names, yes_option
from taskq.errors import TaskError, TaskqError, Unroutable
from taskq.log_tail import LogPrinter
from taskq.logs import LEVELS
from taskq.routing import event_payload
from taskq.subscriber import DEFAULT_MAX_LENGTH, StopFlag, Subscription, follow


max_length_option = click.option(
    "--max-length", type=click.IntRange(min=1), default=DEFAULT_MAX_LENGTH, show_default=True,
    help="Messages the broker holds for this listener while it is behind (a worker batches up to 500 lines "
    "in one); older ones are dropped, and counted.",
)


@contextlib.contextmanager
def broker_errors(app: App) -> Iterator[None]:
    """A broker that is down or refuses us is one line and exit 1, not a traceback."""
    try:
        yield
    except app.broker.connection_errors as exc:
        raise broker_error(app, exc) from None


def broker_error(app: App, exc: BaseException) -> click.ClickException:
    return click.ClickException(connection_problem(app.broker.masked_url, exc))


def run_subscription(app: App, subscription: Subscription, on_message: Callable[[Any], None], stop: StopFlag, *,
                     command: str, on_ready: Callable[[str], None]) -> None:
    """Follow until Ctrl-C; a broker unreachable at the start is one line and exit 1."""
    with broker_errors(app):
        follow(
            subscription, on_message, stop, on_ready=on_ready,
            on_reconnected=lambda queue: click.echo(f"taskq {command}: reconnected, listening again (queue {queue})", err=True),
            on_lost=lambda exc: click.echo(f"taskq {command}: lost the broker ({type(exc).__name__}: {exc}); reconnecting", err=True),
        )


# -- logs ---------------------------------------------------------------------------------


@click.command()
@optional_app_option("Only this App's workers, on its broker (env TASKQ_APP).")
@broker_option
@click.option("--level", type=click.Choice(LEVELS, case_sensitive=False), default="debug", show_default=True,
              help="Show lines at this level and above.")
@click.option("--task", "task_name", default=None, metavar="NAME", help="Only lines of this task.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as the workers sent them.")
@click.option("--output", type=click.File("a"), default=None, metavar="FILE", help="Append lines to FILE instead of stdout.")
@max_length_option
def logs(app_path: str | None, broker: str | None, level: str, task_name: str | None, as_json: bool, output: IO[str] | None, max_length: int) -> None:
    """Follow every worker's log lines, live, until Ctrl-C.

    Each `taskq logs` has its own queue on the taskq.logs fanout, so any number of them
    (a screen, a file) each get every line. Lines it missed because it fell behind are
    reported on stderr, and counted at the end.
    """
    app = load(app_path, broker)
    out = output or sys.stdout
    printer = LogPrinter(
        out, sys.stderr, app_name=app.name if app_path else None, level=level.lower(), task=task_name,
        as_json=as_json, colors=output is None and sys.stdout.isatty(),
    )
    stop = StopFlag()
    subscription = Subscription(app.broker, topology.logs_exchange(), [""], max_length=max_length)
    run_subscription(
        app, subscription, printer, stop, command="logs",
        on_ready=lambda queue: click.echo(f"taskq logs: listening on {topology.LOGS_EXCHANGE} (queue {queue}); Ctrl-C to stop", err=True),
    )
    click.echo(f"taskq logs: received {printer.received} lines, missed {printer.gaps.missed}", err=True)


# -- events ------------------------------------------------------------------------------


@click.command()
@click.argument("pattern", default="#")
@optional_app_option("Use this App's broker (env TASKQ_APP).")
@broker_option
@click.option("--json", "as_json", is_flag=True, help='One {"topic": ..., "payload": ...} object per line.')
@max_length_option
def events(pattern: str, app_path: str | None, broker: str | None, as_json: bool, max_length: int) -> None:
    """Print user events (app.publish) whose topic matches PATTERN (default '#': all), until Ctrl-C.

    PATTERN is an AMQP topic pattern: '*' matches one word, '#' zero or more.
    """
    app = load(app_path, broker)
    stop = StopFlag()

    def on_message(message: Any) -> None:
        topic = message.delivery_info.get("routing_key", "")
        try:
            payload = event_payload(message.body)
        except Exception:  # not a taskq event: show what we can
            payload = repr(message.body)
        if as_json:
            click.echo(json.dumps({"topic": topic, "payload": payload}, default=repr))
        else:
            click.echo(f"{topic} {json.dumps(payload, default=repr)}")

    subscription = Subscription(app.broker, topology.events_exchange(), [pattern], max_length=max_length)
    run_subscription(
        app, subscription, on_message, stop, command="events",
        on_ready=lambda queue: click.echo(f"taskq events: listening for {pattern!r} on {topology.EVENTS_EXCHANGE}; Ctrl-C to stop", err=True),
    )


# -- status ------------------------------------------------------------------------------


@click.command()
@app_option
@broker_option
@click.option("-Q", "--queues", default=None, metavar="Q1,Q2", help="These queues (default: all of the app's).")
@click.option("--wait", "listen", type=click.FloatRange(min=0.1), default=settings.STATUS_WAIT, show_default=True,
              help="Seconds to listen for worker heartbeats (at least two heartbeat intervals).")
@click.option("--counts", type=click.Choice(["auto", "rabbitmqctl", "amqp"]), default="auto", show_default=True,
              help="Where queue numbers come from: rabbitmqctl on the broker's host, else AMQP plus heartbeats.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def status(app_path: str, broker: str | None, queues: str | None, listen: float, counts: str, as_json: bool) -> None:
    """Queues (ready, unacked, consumers, with their dead-letter queues) and live workers of an app."""
    from taskq.status import collect_status, report_lines

    app = load(app_path, broker)
    queue_names = split_queue_names(queues) if queues else None
    stop = StopFlag()
    with broker_errors(app):
        report = collect_status(app, listen=listen, counts=counts, queue_names=queue_names, should_stop=stop)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    for line in report_lines(report, app.name, listen, time.time()):
        click.echo(line)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)


# -- purge -------------------------------------------------------------------------------


@click.command()
@click.argument("queue")
@optional_app_option("Use this App's broker (env TASKQ_APP).")
@broker_option
@yes_option
def purge(queue: str, app_path: str | None, broker: str | None, yes: bool) -> None:
    """Delete every ready message in QUEUE (messages being worked on are not touched)."""
    app = load(app_path, broker)
    with broker_errors(app), app.broker.connect() as connection:
        connection.connect()  # a refused login is a ChannelError too: not "no queue named" below
        try:
            ready, _ = queue_counts(connection, queue)
        except connection.channel_errors:
            raise UserError(f"no queue named {queue!r} on {app.broker.masked_url}") from None
        if not yes:
            click.confirm(f"Delete the {ready} ready messages in {queue!r}?", abort=True)
        purged = connection.channel().queue_purge(queue)
    click.echo(f"purged {purged} messages from {queue}")


# -- call --------------------------------------------------------------------------------


def parse_json(option: str, text: str, expected: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{option}: not JSON: {exc}") from None
    if not isinstance(value, expected):
        raise UserError(f"{option}: expected a JSON {'array' if expected is list else 'object'}")
    return value


@click.command()
@click.argument("task_name", metavar="TASK")
@app_option
@broker_option
@click.option("--args", "args_json", default="[]", metavar="JSON", help="Positional arguments, a JSON array.")
@click.option("--kwargs", "kwargs_json", default="{}", metavar="JSON", help="Keyword arguments, a JSON object.")
@click.option("--queue", default=None, help="Send to this queue (required for a task the app doesn't define).")
@click.option("--wait", is_flag=True, help="Wait for the result and print it as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0), default=settings.CALL_TIMEOUT, show_default=True, help="Seconds --wait waits.")
def call(task_name: str, app_path: str, broker: str | None, args_json: str, kwargs_json: str, queue: str | None, wait: bool, timeout: float) -> None:
    """Send TASK with arguments; print its id, or with --wait its result."""
    args = parse_json("--args", args_json, list)
    kwargs = parse_json("--kwargs", kwargs_json, dict)
    app = load(app_path, broker)
    task = app.tasks.get(task_name)
    if task is None and queue is None:
        raise UserError(f"no task named {task_name!r} in app {app.name}; pass --queue to send it anyway")
    try:
        if task is not None:
            result = task.apply_async(args, kwargs, queue=queue)
        else:
            result = app.send_task(task_name, args, kwargs, queue=queue, want_result=wait)
        if not wait:
            click.echo(result.id)
            return
        value = result.get(timeout=timeout)
    except TaskError as exc:
        click.echo(f"task {task_name} failed: {exc.exc_type}: {exc.exc_message}", err=True)
        sys.exit(1)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    except Unroutable as exc:
        raise UserError(str(exc)) from None
    except TaskqError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        app.close()
    click.echo(json.dumps(value, default=repr))


OPERATOR_COMMANDS = [logs, events, status, purge, call]
