"""The operator's commands: logs, events, status, purge, call.

Registered on the ``taskq`` group by cli.py, which imports this module after defining
what it shares (``UserError``, the app loader, the common options).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from typing import IO, Any, Callable, Iterator

import click
import structlog

from taskq import topology
from taskq.app import App
from taskq.broker import connection_problem, queue_counts
from taskq.cli_common import UserError, app_option, broker_option, load, optional_app_option
from taskq.errors import TaskError, TaskqError, Unroutable
from taskq.logs import LEVELS
from taskq.message import unpack
from taskq.backoff import reconnect_backoff
from taskq.subscriber import DEFAULT_MAX_LENGTH, GapCounter, Subscription, records


max_length_option = click.option(
    "--max-length", type=click.IntRange(min=1), default=DEFAULT_MAX_LENGTH, show_default=True,
    help="Messages the broker holds for this listener while it is behind (a worker batches up to 500 lines "
    "in one); older ones are dropped, and counted.",
)


class StopFlag:
    """Set by SIGINT or SIGTERM, so a listener finishes its loop and prints its summary."""

    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped


@contextlib.contextmanager
def broker_errors(app: App) -> Iterator[None]:
    """A broker that is down or refuses us is one line and exit 1, not a traceback."""
    try:
        yield
    except app.broker.connection_errors as exc:
        raise broker_error(app, exc) from None


def broker_error(app: App, exc: BaseException) -> click.ClickException:
    return click.ClickException(connection_problem(app.broker.masked_url, exc))


def run_subscription(app: App, subscription: Subscription, on_message, stop: StopFlag, *, command: str,
                     on_ready: Callable[[str], None]) -> None:
    """Listen until Ctrl-C, through broker outages.

    A broker unreachable at the start is an error (exit 1): likely a wrong URL. Once
    listening, a lost connection is re-made with backoff, said once on stderr: a follower
    should outlive a broker restart. The listener's queue went with the connection, so
    what was sent meanwhile is missed (``taskq logs`` counts those lines by their numbers).
    """
    listening = False
    attempt = 0

    def ready(queue: str) -> None:
        nonlocal listening, attempt
        if listening:
            click.echo(f"taskq {command}: reconnected, listening again (queue {queue})", err=True)
        else:
            on_ready(queue)
        listening, attempt = True, 0

    while not stop():
        try:
            subscription.run(on_message, should_stop=stop, on_ready=ready)
            return
        except app.broker.connection_errors as exc:
            if not listening:
                raise broker_error(app, exc) from None
            if attempt == 0:
                click.echo(f"taskq {command}: lost the broker ({type(exc).__name__}: {exc}); reconnecting", err=True)
        pause_until = time.monotonic() + reconnect_backoff(attempt)
        attempt += 1
        while not stop() and time.monotonic() < pause_until:
            time.sleep(0.1)


# -- logs ---------------------------------------------------------------------------------


class LogPrinter:
    """Filters and writes the records one ``taskq logs`` receives, and counts what it missed."""

    def __init__(self, out: IO[str], *, app_name: str | None, level: str, task: str | None, as_json: bool, colors: bool) -> None:
        self.out = out
        self.app_name = app_name
        self.min_level = LEVELS.index(level)
        self.task = task
        self.as_json = as_json
        self.renderer = structlog.dev.ConsoleRenderer(colors=colors)
        self.gaps = GapCounter()
        self.received = 0

    def __call__(self, message: Any) -> None:
        for record in records(message):
            self.write(record)
        self.out.flush()

    def write(self, record: dict[str, Any]) -> None:
        if self.app_name and record.get("app") != self.app_name:
            return
        self.received += 1
        missed = self.gaps.see((record.get("host", "?"), record.get("pid", 0)), record.get("seq"))
        if missed:
            click.echo(f"taskq logs: missed {missed} lines from {record.get('host')} pid {record.get('pid')}", err=True)
        if self.task and record.get("task") != self.task:
            return
        level = record.get("level", "info")
        if level in LEVELS and LEVELS.index(level) < self.min_level:
            return
        line = json.dumps(record) if self.as_json else self.renderer(None, level, dict(record))
        self.out.write(line + "\n")


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
        out, app_name=app.name if app_path else None, level=level.lower(), task=task_name,
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
            payload = unpack(message.body).get("args", [None, None])[1]
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
@click.option("--wait", "listen", type=click.FloatRange(min=0.1), default=4.5, show_default=True,
              help="Seconds to listen for worker heartbeats (at least two heartbeat intervals).")
@click.option("--counts", type=click.Choice(["auto", "rabbitmqctl", "amqp"]), default="auto", show_default=True,
              help="Where queue numbers come from: rabbitmqctl on the broker's host, else AMQP plus heartbeats.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def status(app_path: str, broker: str | None, queues: str | None, listen: float, counts: str, as_json: bool) -> None:
    """Queues (ready, unacked, consumers, with their dead-letter queues) and live workers of an app."""
    from taskq.status import collect_status

    app = load(app_path, broker)
    queue_names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    stop = StopFlag()
    with broker_errors(app):
        report = collect_status(app, listen=listen, counts=counts, queue_names=queue_names, should_stop=stop)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(f"queues of {app.name} (numbers from {report.counts_from}):")
    click.echo(f"  {'queue':<40} {'ready':>7} {'unacked':>8} {'consumers':>10}")
    for q in report.queues:
        if not q.exists:
            click.echo(f"  {q.name:<40} {'(not declared yet)':>27}")
            continue
        click.echo(f"  {q.name:<40} {q.ready:>7} {q.unacked:>8} {q.consumers:>10}")
    click.echo(f"workers heard from in {listen:g} s: {len(report.workers)}")
    now = time.time()
    for w in report.workers:
        current = f"{w.current['task']}[{w.current['task_id']}]" if w.current else "idle"
        click.echo(
            f"  {w.host} pid {w.pid} (worker {w.ppid}, concurrency {w.concurrency}): {current}; "
            f"done {w.done}, failed {w.failed}; last seen {now - w.last_seen:.1f} s ago"
        )
    for note in report.notes:
        click.echo(f"note: {note}", err=True)


# -- purge -------------------------------------------------------------------------------


@click.command()
@click.argument("queue")
@optional_app_option("Use this App's broker (env TASKQ_APP).")
@broker_option
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
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
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True, help="Seconds --wait waits.")
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
