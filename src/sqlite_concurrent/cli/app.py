"""The ``sqlite-concurrent`` command line: demo, stress, bench, check, status and recover.

This module parses arguments, prints and picks the exit status; the work is done in
:mod:`.stress` (runs), :mod:`.bench` (the benchmark matrix), :mod:`.chart` (its SVG),
:mod:`.check` (the check command's findings), :mod:`.status` (the lock database view) and
:mod:`.recovery` (cleaning up after dead processes), and results are drawn by :mod:`.display`
(the live view, tables and verdicts).  Every command reports bad input in one line on stderr
and exits with status 2; a failed check exits with status 1.

This process never opens a ``sqlite_concurrent`` connection itself: the writers are spawned
processes.  The parent reads the main database only through stdlib ``sqlite3`` and the lock
database only through APSW, read-only (the library ``sqlite_concurrent`` uses for it), never
one file through both: two SQLite libraries in one process cannot see each other's POSIX
locks (see the README's limits).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import apsw
import typer
from rich.console import Console

from ..engine import recovery
from ..errors import translate
from ..locking import lockdb_health
from . import bench, check, display, status, stress
from .workloads import WORKLOADS

app = typer.Typer(
    help="Many processes writing one SQLite database at the same time.",
    no_args_is_help=True,
    add_completion=False,
    # Markdown joins a docstring's wrapped lines into paragraphs; "rich" mode keeps the breaks.
    rich_markup_mode="markdown",
    # Bad input is reported in one line by the commands themselves; never show locals.
    pretty_exceptions_show_locals=False,
)

DEMO_WRITERS = 4
DEMO_THINK_MS = 2.0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2

_WORKLOAD_HELP = "; ".join(f"{w.name}: {w.summary}" for w in WORKLOADS.values())
_TIMEOUT_HELP = (
    "Seconds to wait for a lock another connection holds (e.g. an exclusive lock) before "
    "giving up with an error; during a run, a writer that waits this long counts a busy "
    "conflict and tries again."
)
_CHECK_TIMEOUT_HELP = (
    "Seconds to wait for a lock another connection holds (e.g. an exclusive lock) before "
    "giving up with an error."
)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    Console(stderr=True, highlight=False).print(f"error: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def _one_line(command: Callable[..., None]) -> Callable[..., None]:
    """A library error (any ``sqlite3.Error``) or an OS error that ends a command is one
    ``error:`` line and exit status 2, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (sqlite3.Error, apsw.Error, OSError) as e:
            raise _fail(_message(e)) from None

    return run


def _message(e: BaseException) -> str:
    if isinstance(e, apsw.Error):
        return str(translate(e))
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or e}: {e.filename}"
    return str(e)


@contextlib.contextmanager
def _ctrl_c_stops() -> Iterator[Callable[[], bool]]:
    """While inside, Ctrl-C sets a flag (returned as a callable) instead of raising, so a run
    stops its writers, still checks the database and prints what it measured."""
    pressed: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(console: Console, label: str, *args: Any, **kwargs: Any) -> stress.Result:
    with _ctrl_c_stops() as stopped, display.live(console, label, args[4]) as progress:
        return stress.run(*args, progress=progress, should_stop=stopped, **kwargs)


@app.callback()
def main() -> None:
    """Many processes writing one SQLite database at the same time.

    Run `sqlite-concurrent demo` to see parallel writers next to stock SQLite.
    Exit status: 0 all checks passed, 1 a check failed, 2 bad input or the database could not
    be used.
    """


@app.command()
@_one_line
def demo(
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds to run each engine (the demo runs two).")
    ] = 5.0,
) -> None:
    """Race 4 writer processes on a throwaway database, stock SQLite first, then ours.

    Each transaction reads a row its writer owns, does 2 ms of work, and writes it back.
    Stock SQLite runs one write transaction at a time; sqlite-concurrent runs them in parallel.
    Exits non-zero if an invariant or integrity check fails.
    """
    if not duration > 0:
        raise _fail(f"duration must be positive, not {duration}")
    console = Console(highlight=False)
    results: dict[str, stress.Result] = {}
    with tempfile.TemporaryDirectory(prefix="sqlite-concurrent-demo-") as tmp:
        for engine in ("stock", "ours"):
            try:
                results[engine] = _run(
                    console,
                    f"{engine} ({DEMO_WRITERS} writers)",
                    os.path.join(tmp, f"{engine}.db"),
                    engine,
                    "disjoint",
                    DEMO_WRITERS,
                    duration,
                    DEMO_THINK_MS,
                )
            except (ValueError, stress.StressError) as e:
                raise _fail(str(e)) from None
            r = results[engine]
            console.print(f"{engine}: {r.committed:,} commits, {r.txn_per_s:,.0f}/s", markup=False)
    stock, ours = results["stock"], results["ours"]
    console.print(display.results_table([stock, ours]))
    display.report_problems(console, [stock, ours])
    console.print(display.verdict(stock, ours), markup=False, soft_wrap=True)
    if not (stock.ok and ours.ok):
        raise typer.Exit(EXIT_CHECK_FAILED)


_DEFAULT_OUTPUT_DIR = Path("bench-results")


def _writable_json(path: Path | None, option: str = "--json") -> None:
    if path is None:
        return
    if path.parent == _DEFAULT_OUTPUT_DIR:
        # The default place for results: made on first use (a fresh checkout has none).
        path.parent.mkdir(exist_ok=True)
    if not path.parent.resolve().is_dir():
        raise _fail(f"directory {path.parent.resolve()} for {option} does not exist")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise _fail(f"cannot write {path}: {e.strerror}") from None


_StressDb = Annotated[
    Path,
    typer.Argument(
        help="Database file to hammer: created if missing; in an existing SQLite database "
        "only the workload's own stress_* tables are dropped and recreated.",
        show_default=False,
        metavar="DB",
    ),
]
_Workload = Annotated[
    str, typer.Option("--workload", "-w", help=f"What each transaction does. {_WORKLOAD_HELP}.")
]
_Writers = Annotated[
    int, typer.Option("--writers", "-n", help="Number of writer processes (at least 1).")
]
_Duration = Annotated[float, typer.Option("--duration", "-d", help="Seconds to run.")]
_ThinkMs = Annotated[
    float,
    typer.Option(
        "--think-ms",
        help="Milliseconds of work (a sleep) inside each transaction, between "
        "its reads and its writes.",
    ),
]
_LockLevel = Annotated[
    str,
    typer.Option(
        "--lock-level",
        help="table, page or row: passed to sqlite_concurrent.connect() (ours only).",
    ),
]
_Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        "-e",
        help="ours (sqlite_concurrent) or stock (stdlib sqlite3, WAL, busy_timeout, "
        "BEGIN IMMEDIATE).",
    ),
]
_Accounts = Annotated[
    int, typer.Option("--accounts", help="Number of accounts (transfer and mixed).")
]
_Seed = Annotated[int, typer.Option("--seed", help="Seed for the writers' random choices.")]
_Timeout = Annotated[float, typer.Option("--timeout", help=_TIMEOUT_HELP)]
_StressJson = Annotated[
    Path | None,
    typer.Option("--json", help="Also write the results as JSON to this file.", show_default=False),
]


@app.command("stress")
@_one_line
def stress_command(
    db: _StressDb,
    workload: _Workload = "disjoint",
    writers: _Writers = 4,
    duration: _Duration = 5.0,
    think_ms: _ThinkMs = 2.0,
    lock_level: _LockLevel = "row",
    engine: _Engine = "ours",
    accounts: _Accounts = 100,
    seed: _Seed = 0,
    timeout: _Timeout = 30.0,
    json_path: _StressJson = None,
) -> None:
    """Run one engine on one workload with many writer processes, showing live progress.

    Prints committed transactions/s, latency percentiles (including retries), the fewest and
    most commits of one writer, conflicts by kind and retries.  Afterwards the workload's
    invariant and PRAGMA integrity_check are verified; the exit status is 1 if either fails.
    Ctrl-C stops the writers early and still checks and reports.
    """
    args = (str(db), engine, workload, writers, duration, think_ms, accounts, lock_level, timeout)
    try:
        stress.validate(*args)
    except ValueError as e:
        raise _fail(str(e)) from None
    _writable_json(json_path)
    console = Console(highlight=False)
    try:
        result = _run(
            console,
            f"{engine} {workload}",
            str(db),
            engine,
            workload,
            writers,
            duration,
            think_ms,
            seed,
            accounts=accounts,
            lock_level=lock_level,
            timeout=timeout,
        )
    except (ValueError, stress.StressError) as e:
        raise _fail(str(e)) from None
    console.print(display.results_table([result]))
    display.report_problems(console, [result])
    if json_path is not None:
        _write(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    if not result.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


# -- bench ---------------------------------------------------------------------------------------


def _csv(text: str, kind: Callable[[str], Any], option: str) -> list[Any]:
    try:
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"{option} takes a comma-separated list, not {text!r}") from None
    if not values:
        raise _fail(f"{option} needs at least one value")
    return values


_Workloads = Annotated[
    str, typer.Option("--workloads", help="Comma-separated workloads to run (see stress).")
]
_WritersList = Annotated[
    str, typer.Option("--writers", help="Comma-separated writer process counts.")
]
_ThinkMsList = Annotated[
    str, typer.Option("--think-ms", help="Comma-separated milliseconds of work per transaction.")
]
_RunSeconds = Annotated[float, typer.Option("--duration", help="Seconds per run.")]
_Repeats = Annotated[
    int, typer.Option("--repeats", help="Runs of every cell per engine (spread is min-max).")
]
_OurLockLevel = Annotated[str, typer.Option("--lock-level", help="table, page or row, for ours.")]
_SeedPerRepeat = Annotated[
    int, typer.Option("--seed", help="Seed for the writers; repeat r uses seed + r.")
]
_Directory = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Directory for the scratch databases (default: a temporary one).",
        show_default=False,
    ),
]
_BenchJson = Annotated[
    Path, typer.Option("--json", help="Where to write every run and the summary as JSON.")
]
_Chart = Annotated[
    Path, typer.Option("--chart", help="Where to write the SVG chart of txn/s per writers.")
]
_Markdown = Annotated[
    bool, typer.Option("--markdown", help="Also print the summary as a markdown table.")
]


@app.command("bench")
@_one_line
def bench_command(
    workloads: _Workloads = "ingest,disjoint,transfer,hotmix",
    writers: _WritersList = "1,2,4",
    think_ms: _ThinkMsList = "0,2",
    duration: _RunSeconds = 2.0,
    repeats: _Repeats = 3,
    lock_level: _OurLockLevel = "row",
    accounts: _Accounts = 100,
    seed: _SeedPerRepeat = 0,
    timeout: _Timeout = 30.0,
    directory: _Directory = None,
    json_path: _BenchJson = _DEFAULT_OUTPUT_DIR / "bench.json",
    chart: _Chart = _DEFAULT_OUTPUT_DIR / "bench.svg",
    markdown: _Markdown = False,
) -> None:
    """Run a matrix of workloads x writers x think times on ours and on stock SQLite.

    Engines alternate (their order flips every cell and every repeat) so drift in the machine
    hits both.  Prints the median txn/s of each engine and the ratio ours/stock with its min-max
    over the repeats, writes JSON and an SVG chart.  Exit status 1 if any check failed.
    """
    wl = _csv(workloads, str, "--workloads")
    ns = _csv(writers, int, "--writers")
    thinks = _csv(think_ms, float, "--think-ms")
    matrix = (wl, ns, thinks, duration, repeats)
    settings = {"accounts": accounts, "lock_level": lock_level, "timeout": timeout}
    try:
        bench.validate_matrix(str(directory or tempfile.gettempdir()), *matrix, **settings)
    except ValueError as e:
        raise _fail(str(e)) from None
    _writable_json(json_path)
    _writable_json(chart, "--chart")
    console = Console(highlight=False)
    started = time.time()

    def show(r: stress.Result, done: int, total: int) -> None:
        console.print(display.bench_line(r, done, total), markup=False)

    with contextlib.ExitStack() as stack:
        where = (
            str(directory)
            if directory
            else stack.enter_context(tempfile.TemporaryDirectory(prefix="sqlite-concurrent-bench-"))
        )
        stopped = stack.enter_context(_ctrl_c_stops())
        try:
            results = bench.run_matrix(
                where, *matrix, seed=seed, **settings, on_result=show, should_stop=stopped
            )
        except (ValueError, stress.StressError) as e:
            raise _fail(str(e)) from None
    config = {
        "workloads": wl,
        "writers": ns,
        "think_ms": thinks,
        "duration_s": duration,
        "repeats": repeats,
        "lock_level": lock_level,
        "accounts": accounts,
        "seed": seed,
    }
    _bench_report(console, results, config, started, json_path, chart, markdown=markdown)


def _bench_report(
    console: Console,
    results: list[stress.Result],
    config: dict[str, Any],
    started: float,
    json_path: Path,
    chart: Path,
    *,
    markdown: bool,
) -> None:
    """Print a matrix's summary, write its JSON and chart; exit 1 if any check failed."""
    cells = bench.cells(results)
    repeats, duration = config["repeats"], config["duration_s"]
    console.print(display.bench_table(cells, repeats))
    if markdown:
        console.print(bench.markdown(cells), markup=False, soft_wrap=True)
    report = bench.report(results, cells, config, started)
    _write(json_path, json.dumps(report, indent=2) + "\n")
    _write(chart, bench.svg(cells, duration, repeats, config["lock_level"]))
    console.print(f"JSON written to {json_path}, chart to {chart}", markup=False)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_CHECK_FAILED)


# -- check ---------------------------------------------------------------------------------------


def _sqlite_file(path: Path, what: str) -> None:
    if not path.exists():
        raise _fail(f"{what} {path} does not exist")
    if path.is_dir():
        raise _fail(f"{what} {path} is a directory")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise _fail(f"cannot read {path}: {e.strerror}") from None
    if head and head != b"SQLite format 3\x00":
        raise _fail(f"{path} is not a SQLite database")


@app.command("check")
@_one_line
def check_command(
    db: Annotated[
        Path, typer.Argument(help="The SQLite database to check.", show_default=False, metavar="DB")
    ],
    timeout: Annotated[float, typer.Option("--timeout", help=_CHECK_TIMEOUT_HELP)] = 5.0,
) -> None:
    """Check a database and its sidecar files, and give a verdict.

    Runs PRAGMA integrity_check (a read, through the stdlib sqlite3 module), reads the lock
    database `DB-locks` (tables holders, transactions, locks, waiters), looks for journals
    `DB-journal<PID>` left by dead processes, and reports the WAL size.  Exit status 1 if a check
    fails, 2 if the database cannot be read at all.
    """
    _sqlite_file(db, "database")
    if not timeout >= 0:
        raise _fail(f"timeout must be zero or more, not {timeout}")
    try:
        findings = check.run(db, timeout)
    except check.UnreadableDatabaseError as e:
        raise _fail(str(e)) from None
    console = Console(highlight=False)
    console.print(display.check_table(db, findings))
    console.print(display.check_verdict(findings), markup=False)
    if check.named(findings, check.FAIL):
        raise typer.Exit(EXIT_CHECK_FAILED)


# -- status --------------------------------------------------------------------------------------


@app.command("status")
@_one_line
def status_command(
    db: Annotated[
        Path,
        typer.Argument(
            help="The database whose lock database `DB-locks` to show.",
            show_default=False,
            metavar="DB",
        ),
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON for scripts (shape in the README) instead of tables."
        ),
    ] = False,
    old_after: Annotated[
        float,
        typer.Option(
            "--old-after",
            help="Flag transactions open at least this many seconds as old: while open they "
            "keep the WAL from being reset.",
        ),
    ] = status.DEFAULT_OLD_AFTER,
) -> None:
    """Show who holds and who waits for locks on a database, without changing anything.

    Reads the lock database `DB-locks` read-only: holders (processes, alive or dead),
    transactions (lock level, state, age), locks (resource, mode, holder), waiters in queue
    order, and the size of the WAL.  Transactions older than `--old-after` are flagged: each
    pins a WAL snapshot, so the WAL cannot be reset while it stays open.  No lock database
    means no sqlite_concurrent process has DB open (exit status 0).  Every file beside DB is
    listed with whether something uses it and why it is there.
    """
    _sqlite_file(db, "database")
    if not (0 <= old_after < math.inf):
        raise _fail(f"--old-after must be zero or more seconds, not {old_after}")
    try:
        view = status.read(str(db), old_after=old_after)
    except status.StatusError as e:
        raise _fail(str(e)) from None
    if as_json:
        # Plain print: no wrapping or highlighting may touch the JSON.
        typer.echo(json.dumps(view.to_json(), indent=2))
        return
    console = Console(highlight=False)
    console.print(f"status of {db}", style="bold", markup=False)
    console.print(status.render(view))


@app.command("recover")
@_one_line
def recover_command(
    db: Annotated[
        Path,
        typer.Argument(
            help="The database to clean up after processes that died.",
            show_default=False,
            metavar="DB",
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")
    ] = False,
) -> None:
    """Release the locks and transactions of processes that died, and report them.

    For each dead process: the locks released, its transactions that another process's merge
    committed for it (their commit marker is in the database), and the others, each committed
    in full by the process itself or not at all.  Every connection does the same when it
    opens; this is the on-demand version.  A lock database that is damaged or another
    application's is moved aside (and a fresh one started) once no live process has it open.
    """
    _sqlite_file(db, "database")
    try:
        moved = lockdb_health.ensure_usable(str(db))
        report = recovery.recover(str(db))
    except (sqlite3.Error, apsw.Error) as e:
        raise _fail(f"cannot recover {db}: {translate(e)}") from None
    if moved is not None:
        # On stderr: --json keeps stdout for the report alone.
        Console(stderr=True, highlight=False).print(
            f"{moved.path}: {moved.reason}; moved to {moved.moved_to}, a fresh one starts",
            markup=False,
            soft_wrap=True,
        )
    if as_json:
        typer.echo(display.recovered_json(report))
        return
    console = Console(highlight=False)
    if not report:
        console.print(f"{db}: nothing to recover (no dead holders)", markup=False, soft_wrap=True)
        return
    console.print(display.recovered_table(db, report))
