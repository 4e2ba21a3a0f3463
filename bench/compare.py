"""Benchmark taskq against raw kombu, Celery and Dramatiq on the same RabbitMQ, print one table.

    python -m bench.compare                       # drain 20,000 / enqueue 5,000 / RPC 1,000
    python -m bench.compare --n 2000 --only kombu,taskq
    python -m bench.compare --output bench/results-peers.txt

Each system runs the same phases, measured from outside by the same code (this module):

1. enqueue: N no-op ``.delay()`` calls from one thread, with no workers running;
2. drain + cold start: pre-load the queue with workers stopped, spawn the worker command and read
   the times the first and the last pre-loaded task recorded;
3. RSS of each worker child after the drain;
4. RPC: sequential ``.delay().get()`` round trips.

Every figure is also given as a ratio to raw kombu measured in the same run, which cancels out
most of the machine: the ratio is what to compare across machines, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kombu import Connection

if not __package__:  # run as `python bench/compare.py`: make `bench` importable like `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BROKER_URL,
    Unavailable,
    WorkerProcesses,
    broker_pid,
    broker_prefetch_view,
    cpu_seconds,
    percentile,
    purge_queue,
    queue_depth,
    rss_mib,
    wait_for_mark,
    wait_queue_empty,
)
from bench.systems import SYSTEM_MODULES, load_system
from bench.systems.base import System

BASELINE = "kombu"


@dataclass
class Settings:
    """How much work each phase does. Defaults are the issue's moderate run."""

    drain_n: int = 20_000
    enqueue_n: int = 5_000
    rpc_n: int = 1_000
    only: list[str] = field(default_factory=lambda: list(SYSTEM_MODULES))
    #: Untimed calls before each timed phase: connection set-up and first-call imports are
    #: start-up cost (measured as cold start), not throughput.
    warmup: int = 20
    #: Ask rabbitmqctl, after the drain, what prefetch each system's consumers really have.
    show_prefetch: bool = False
    #: Rounds over all systems; figures are medians over the rounds.
    repeat: int = 1


@dataclass
class Row:
    """One line of the table. ``None`` means not measured (unavailable, failed or not applicable)."""

    system: str
    status: str = "ok"
    enqueue_per_s: float | None = None
    drain_per_s: float | None = None
    rpc_p50_ms: float | None = None
    rpc_p99_ms: float | None = None
    rss_child_mib: float | None = None
    cold_start_s: float | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: An enqueue-only reference row (e.g. kombu without confirms).
    reference: bool = False


#: (attribute, header, format) of the numeric columns, in table order.
COLUMNS: list[tuple[str, str, str]] = [
    ("enqueue_per_s", "enqueue msg/s", "{:,.0f}"),
    ("drain_per_s", "drain tasks/s", "{:,.0f}"),
    ("rpc_p50_ms", "RPC p50 ms", "{:.2f}"),
    ("rpc_p99_ms", "RPC p99 ms", "{:.2f}"),
    ("rss_child_mib", "RSS/child MiB", "{:.1f}"),
    ("cold_start_s", "cold start s", "{:.2f}"),
]


# --------------------------------------------------------------------------- measuring


def _timed(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return time.perf_counter() - start


def _wait_depth(queue: str, n: int, timeout: float = 60.0) -> None:
    """Wait until the pre-load is fully in the queue (RabbitMQ enqueues asynchronously)."""
    deadline = time.monotonic() + timeout
    while (depth := queue_depth(queue)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pre-load: {depth} of {n} messages reached {queue}")
        time.sleep(0.05)
    if depth != n:
        raise RuntimeError(f"pre-load: {queue} holds {depth} messages, expected {n} (leftovers?)")


def measure_enqueue(system: System, settings: Settings) -> list[Row]:
    """The enqueue column for the system's row and for each of its reference rows."""
    rows = [Row(system.name)] + [Row(label, reference=True) for label in system.reference_enqueues]
    fns = [system.enqueue, *system.reference_enqueues.values()]
    for row, fn in zip(rows, fns):
        purge_queue(system.queue)
        fn(settings.warmup)
        purge_queue(system.queue)
        row.enqueue_per_s = settings.enqueue_n / _timed(fn, settings.enqueue_n)
    purge_queue(system.queue)
    return rows


def measure_drain(system: System, settings: Settings, workdir: Path, row: Row) -> WorkerProcesses:
    """Pre-load, spawn the workers, and fill in cold start, drain rate and RSS per child.

    Cold start is spawn -> first task executed, so it includes interpreter start, imports,
    connecting and the first delivery. Drain is first task -> last task, i.e. the steady rate of
    two processes; the one message in the other process's hands when the last one runs is the
    only thing it can miss.
    """
    n = settings.drain_n
    first, last = workdir / f"{system.name}.first", workdir / f"{system.name}.last"
    purge_queue(system.queue)
    system.preload(n, str(first), str(last))
    _wait_depth(system.queue, n)

    spawned = time.monotonic()
    workers = system.start_workers(workdir / f"{system.name}-workers.log")
    t_first = wait_for_mark(first, timeout=120, workers=workers)
    # Where the drain's CPU goes (supervisor, children, broker): read once the first task ran,
    # so start-up imports are not counted, and again after the last.
    children = workers.child_pids()
    watched = {"supervisor": workers.supervisor_pids(), "children": children}
    if (bpid := broker_pid()) is not None:
        watched["broker"] = [bpid]
    cpu_before = {k: sum(cpu_seconds(p) for p in pids) for k, pids in watched.items()}
    # Generous: even 200 tasks/s must finish, anything slower is broken rather than slow.
    t_last = wait_for_mark(last, timeout=60 + n / 200, workers=workers)
    cpu_used = {k: sum(cpu_seconds(p) for p in pids) - cpu_before[k] for k, pids in watched.items()}
    row.cold_start_s = t_first - spawned
    row.drain_per_s = (n - 1) / (t_last - t_first)
    wait_queue_empty(system.queue)

    if not children:
        raise RuntimeError("found no worker child processes")
    rss = [rss_mib(pid) for pid in children]
    row.rss_child_mib = sum(rss) / len(rss)
    detail = ", ".join(f"{v:.1f}" for v in rss)
    sup = workers.supervisor_pids()
    sup_note = f"; supervisor {rss_mib(sup[0]):.1f} MiB" if sup else "; no supervisor process"
    row.notes.append(f"{len(children)} worker children, VmRSS {detail} MiB{sup_note}")
    per_task = ", ".join(f"{k} {v / (n - 1) * 1e6:.0f}" for k, v in cpu_used.items() if watched[k])
    row.notes.append(f"drain CPU per task, µs: {per_task} (wall {(t_last - t_first) / (n - 1) * 1e6:.0f} µs/task)")
    if settings.show_prefetch:
        try:
            row.notes.append(broker_prefetch_view(system.queue))
        except Exception as exc:  # noqa: BLE001 - a diagnostic; the figures above still stand
            row.notes.append(f"broker view: rabbitmqctl failed ({_describe(exc)})")
    return workers


def measure_rpc(system: System, settings: Settings, row: Row) -> None:
    """p50/p99 of sequential round trips, after a few untimed ones."""
    system.rpc_roundtrips(min(settings.warmup, settings.rpc_n))
    timings = system.rpc_roundtrips(settings.rpc_n)
    row.rpc_p50_ms = percentile(timings, 50) * 1000
    row.rpc_p99_ms = percentile(timings, 99) * 1000


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 600 else text[:600] + "..."


def measure_system(
    name: str, settings: Settings, workdir: Path, unstopped: list[System] | None = None
) -> list[Row]:
    """All phases for one system. A failing phase is recorded in the row and the next phase still
    runs where it can; the system is always stopped and its queues deleted (if that fails, e.g.
    the broker was restarting, the system goes on *unstopped* for another try at the end)."""
    try:
        system = load_system(name)
    except Unavailable as exc:
        return [Row(name, status=f"unavailable: {exc}")]
    except Exception as exc:  # noqa: BLE001 - e.g. no broker: a failure, not "unavailable"
        return [Row(name, status="failed", errors=[f"set-up: {_describe(exc)}"])]

    row = Row(system.name, notes=list(system.notes))
    rows = [row]
    try:
        try:
            enqueue_rows = measure_enqueue(system, settings)
            row.enqueue_per_s = enqueue_rows[0].enqueue_per_s
            rows += enqueue_rows[1:]
        except Exception as exc:  # noqa: BLE001
            row.errors.append(f"enqueue: {_describe(exc)}")

        workers = None
        try:
            workers = measure_drain(system, settings, workdir, row)
        except Exception as exc:  # noqa: BLE001
            row.errors.append(f"drain: {_describe(exc)}")

        if workers is not None and workers.alive():
            try:
                measure_rpc(system, settings, row)
            except Exception as exc:  # noqa: BLE001
                row.errors.append(f"rpc: {_describe(exc)}")
        else:
            row.errors.append("rpc: skipped, workers not running")
    finally:
        try:
            system.stop()
        except Exception as exc:  # noqa: BLE001
            row.errors.append(f"stop: {_describe(exc)}")
            if unstopped is not None:
                unstopped.append(system)
    if row.errors:
        row.status = "failed"
    return rows


def run(settings: Settings, progress: Callable[[str], None] | None = None) -> list[Row]:
    """Benchmark every selected system, one at a time (2 cores are shared), ``repeat`` rounds.

    Rounds go through all systems in turn rather than repeating one system back to back, so a
    slow spell on the machine hits every system rather than just one; each figure is then the
    median over the rounds.
    """
    workdir = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    rounds: list[list[Row]] = []
    unstopped: list[System] = []
    for i in range(settings.repeat):
        round_dir = workdir / f"round-{i + 1}"
        round_dir.mkdir()
        rows: list[Row] = []
        for name in settings.only:
            if progress:
                progress(f"round {i + 1}/{settings.repeat}: benchmarking {name} ...")
            rows += measure_system(name, settings, round_dir, unstopped)
        rounds.append(rows)
    for system in unstopped:  # last try at deleting what a failed stop() left behind
        try:
            system.stop()
        except Exception as exc:  # noqa: BLE001
            if progress:
                progress(f"could not clean up after {system.name}: {_describe(exc)}")
    combined = rounds[0] if len(rounds) == 1 else combine_rounds(rounds)
    if not any(r.errors for r in combined):
        shutil.rmtree(workdir, ignore_errors=True)
    return combined


def combine_rounds(rounds: list[list[Row]]) -> list[Row]:
    """One row per system: the median of each figure over the rounds that produced it, the
    range in the notes, and every round's errors."""
    per_round: dict[tuple[str, bool], list[tuple[int, Row]]] = {}
    for number, rows in enumerate(rounds, start=1):  # keyed in order of first appearance
        for r in rows:
            per_round.setdefault((r.system, r.reference), []).append((number, r))

    combined: list[Row] = []
    for (system, reference), same in per_round.items():
        # Describe the system from a round that got past set-up, if any did.
        template = next((r for _, r in same if r.notes), same[0][1])
        row = Row(system, reference=reference, notes=list(template.notes))
        spread = []
        for attr, header, fmt in COLUMNS:
            values = sorted(v for _, r in same if (v := getattr(r, attr)) is not None)
            if values:
                setattr(row, attr, statistics.median(values))
                if len(values) > 1:
                    spread.append(f"{header} {fmt.format(values[0])}..{fmt.format(values[-1])}"
                                  + (f" ({len(values)} rounds)" if len(values) < len(rounds) else ""))
                elif len(rounds) > 1:
                    spread.append(f"{header} from 1 round only")
        per_round_notes = ("drain CPU", "broker view")
        row.notes = [n for n in row.notes if not n.startswith(per_round_notes)]
        row.notes += [f"round {i}: {n}" for i, r in same for n in r.notes if n.startswith(per_round_notes)]
        if spread:
            row.notes.append(f"median over {len(rounds)} rounds; range: " + ", ".join(spread))
        row.errors = [f"round {i}: {e}" for i, r in same for e in r.errors]
        if all(r.status.startswith("unavailable") for _, r in same):
            row.status = same[0][1].status
        else:
            row.errors += [f"round {i}: {r.status}" for i, r in same if r.status.startswith("unavailable")]
            row.status = "failed" if row.errors else "ok"
        combined.append(row)
    return combined


# --------------------------------------------------------------------------- reporting


def _cell(row: Row, attr: str, fmt: str, baseline: Row | None) -> str:
    value = getattr(row, attr)
    if value is None:
        return "-"
    text = fmt.format(value)
    base = getattr(baseline, attr) if baseline is not None else None
    if base:
        text += f" ({value / base:.2f}x)"
    return text


def render_table(rows: Sequence[Row]) -> str:
    """The table plus notes. Ratios are value / raw kombu's value in the same run."""
    baseline = next((r for r in rows if r.system == BASELINE and not r.reference), None)
    headers = ["system"] + [c[1] for c in COLUMNS]
    lines_cells: list[list[str]] = []
    for row in rows:
        if row.status.startswith("unavailable"):
            lines_cells.append([row.system, row.status])
            continue
        lines_cells.append([row.system] + [_cell(row, a, f, baseline) for a, _, f in COLUMNS])
    widths = [len(h) for h in headers]
    for cells in lines_cells:
        if len(cells) == len(headers):
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]

    def fmt_line(cells: list[str]) -> str:
        if len(cells) != len(headers):
            return f"{cells[0]:<{widths[0]}}  {cells[1]}"
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join([first] + [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:])])

    out = [fmt_line(headers), "  ".join("-" * w for w in widths)]
    out += [fmt_line(cells) for cells in lines_cells]
    out.append("")
    if baseline is None or baseline.status.startswith("unavailable"):
        out.append("(no ratios: raw kombu was not run)")
    else:
        out.append(
            "(x) = value / raw kombu's value in this run: above 1 is better for enqueue and drain, "
            "below 1 is better for RPC, RSS and cold start."
        )
    if any(r.errors for r in rows):
        out.append("Some phases failed (marked ! below): their cells are '-' or medians of the rounds that completed.")
    out.append("")
    out.append("notes:")
    for row in rows:
        for note in row.notes:
            out.append(f"  - {row.system}: {note}")
        for err in row.errors:
            out.append(f"  ! {row.system}: {err}")
    return "\n".join(out)


def _versions() -> str:
    parts = []
    for dist in ("taskq", "kombu", "amqp", "celery", "dramatiq", "pika", "redis"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def _rabbitmq_version() -> str:
    try:
        with Connection(BROKER_URL) as conn:
            conn.connect()
            props = conn.connection.server_properties
            return f"{props.get('product', 'broker')} {props.get('version', '?')}"
    except Exception as exc:  # noqa: BLE001
        return f"unreachable ({exc})"


def _loadavg() -> str:
    """1/5/15-minute load: on a shared 2-core machine, the first thing to read next to a figure."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def render_header(settings: Settings, argv: Sequence[str]) -> str:
    """Command line, date and environment: what a saved results file needs to be re-run."""
    cmd = "python -m bench.compare" + ("".join(" " + shlex.quote(a) for a in argv))
    return "\n".join(
        [
            f"command: {cmd}",
            f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            (f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, "
             f"load average at start {_loadavg()}"),
            f"broker:  {_rabbitmq_version()} at {BROKER_URL.split('@')[-1]}",
            f"versions: {_versions()}",
            (f"sizes:   enqueue {settings.enqueue_n:,}, drain {settings.drain_n:,}, RPC {settings.rpc_n:,} "
             f"(+{settings.warmup} untimed warm-up calls per timed phase); "
             f"{settings.repeat} round(s), median shown"),
            "",
        ]
    )


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str]) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--n", type=int, default=20_000,
        help="drain size (default 20000); enqueue defaults to n/4 and RPC to n/20, at least 10 each",
    )
    parser.add_argument("--enqueue", type=int, help="number of timed .delay() calls")
    parser.add_argument("--rpc", type=int, help="number of timed round trips")
    parser.add_argument(
        "--only", default=",".join(SYSTEM_MODULES),
        help=f"comma-separated systems, in order (default: {','.join(SYSTEM_MODULES)})",
    )
    parser.add_argument("--output", type=Path, help="also write the header and table to this file")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all systems; report medians (default 1)")
    parser.add_argument(
        "--show-prefetch", action="store_true",
        help="after each drain, note the consumers' prefetch as rabbitmqctl reports it (local broker)",
    )
    args = parser.parse_args(argv)

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SYSTEM_MODULES]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEM_MODULES)}")
    if args.n < 2:
        parser.error("--n must be at least 2 (the first and last task are both timed)")
    settings = Settings(
        drain_n=args.n,
        enqueue_n=args.enqueue or max(10, args.n // 4),
        rpc_n=args.rpc or max(10, args.n // 20),
        only=only,
        show_prefetch=args.show_prefetch,
        repeat=max(1, args.repeat),
    )
    return settings, args.output


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    settings, output = parse_args(argv)
    header = render_header(settings, argv)
    print(header, flush=True)
    rows = run(settings, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    table = render_table(rows) + f"\n\nload average at end {_loadavg()}"
    print(table)
    if output is not None:
        output.write_text(header + "\n" + table + "\n")
    return 0 if all(r.status != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
