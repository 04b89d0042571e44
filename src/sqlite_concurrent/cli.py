"""The ``sqlite-concurrent`` command line: demo, stress, bench, check, status and recover.

This module parses arguments and renders results; the work is done in :mod:`.stress` (runs),
:mod:`.bench` (the benchmark matrix), :mod:`.chart` (its SVG), :mod:`.status` (the lock
database view) and :mod:`.recovery` (cleaning up after dead processes).  Every command reports
bad input in one line on stderr and exits with status 2; a failed check exits with status 1.

This process never opens a ``sqlite_concurrent`` connection itself: the writers are spawned
processes.  The parent reads the main database only through stdlib ``sqlite3`` and the lock
database only through APSW, read-only (the library ``sqlite_concurrent`` uses for it), never
one file through both: two SQLite libraries in one process cannot see each other's POSIX
locks (see the README's limits).
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import signal
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import apsw
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import bench, recovery, status, stress
from .checkpoint import DEFAULT_WAL_LIMIT
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


# -- the live display ----------------------------------------------------------------------------


class _Monitor:
    """A live view of a run: commits/s over the last second, conflicts, retries, and each
    writer's commits.  In a terminal it is redrawn in place; otherwise (CI logs, pipes) it
    prints one line when the writers start and one a second after that."""

    def __init__(self, console: Console, label: str, duration: float) -> None:
        self.console = console
        self.label = label
        self.duration = duration
        self.snap: stress.Live | None = None
        self.recent: deque[tuple[float, int]] = deque()
        self.next_line = 0.0

    def rate(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.recent[0], self.recent[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def update(self, snap: stress.Live) -> None:
        if self.snap is None and not self.console.is_terminal:
            self.console.print(
                f"started: {self.label}, {len(snap.commits)} writers for {self.duration:g} s "
                "(Ctrl-C stops early)",
                markup=False,
            )
            self.next_line = snap.elapsed + 1
        self.snap = snap
        self.recent.append((snap.elapsed, sum(snap.commits)))
        while self.recent and self.recent[0][0] < snap.elapsed - 1.0:
            self.recent.popleft()
        if not self.console.is_terminal and snap.elapsed >= self.next_line:
            self.next_line += 1
            self.console.print(self._line(), markup=False)

    def _line(self) -> str:
        s = self.snap
        assert s is not None
        return (
            f"{min(s.elapsed, self.duration):5.1f} s  {sum(s.commits):>8,} commits  "
            f"{self.rate():>8,.0f} commits/s  {sum(s.conflicts):>6,} conflicts  "
            f"{sum(s.retries):>6,} retries"
        )

    def __rich__(self) -> Any:
        if self.snap is None:
            return Text(f"{self.label}: starting writers...")
        s = self.snap
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for name in ("writer", "commits", "", "conflicts", "retries"):
            table.add_column(name, justify="left" if name in ("writer", "") else "right")
        most = max(max(s.commits), 1)
        for i, (c, k, r) in enumerate(zip(s.commits, s.conflicts, s.retries, strict=True)):
            table.add_row(
                str(i), f"{c:,}", ProgressBar(total=most, completed=c, width=30), str(k), str(r)
            )
        head = Text(f"{self.label}  ", style="bold")
        head.append(self._line(), style="")
        return Group(head, table)


def _run(console: Console, label: str, *args: Any, **kwargs: Any) -> stress.Result:
    monitor = _Monitor(console, label, args[4])
    with _ctrl_c_stops() as stopped:
        if console.is_terminal:
            with Live(monitor, console=console, refresh_per_second=8, transient=True):
                return stress.run(*args, progress=monitor.update, should_stop=stopped, **kwargs)
        return stress.run(*args, progress=monitor.update, should_stop=stopped, **kwargs)


# -- results -------------------------------------------------------------------------------------


def _check_mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[bold red]FAILED[/]"


def _table(results: list[stress.Result]) -> Table:
    first = results[0]
    level = f", lock level {first.lock_level}" if any(r.engine == "ours" for r in results) else ""
    table = Table(
        title=f"{first.workload}: {first.writers} writers, {first.think_ms:g} ms of work "
        f"per transaction, {first.duration:g} s{level}",
        title_justify="left",
    )
    table.add_column("")
    for r in results:
        table.add_column(r.engine, justify="right")

    def row(label: str, cell: Callable[[stress.Result], str]) -> None:
        table.add_row(label, *(cell(r) for r in results))

    row("transactions/s", lambda r: f"{r.txn_per_s:,.0f}")
    by_engine = {r.engine: r for r in results}
    if {"stock", "ours"} <= by_engine.keys() and by_engine["stock"].txn_per_s:
        ratio = by_engine["ours"].txn_per_s / by_engine["stock"].txn_per_s
        row("ratio ours/stock", lambda r: f"[bold]{ratio:.2f}x[/]" if r.engine == "ours" else "")
    row("committed", lambda r: f"{r.committed:,} in {r.elapsed_s:.1f} s")
    for pct in ("p50", "p95", "p99", "max"):
        row(f"latency {pct} ms", lambda r, p=pct: f"{getattr(r, p + '_ms'):.1f}")
    row("commits/writer fewest", lambda r: f"{r.fewest_commits:,}")
    row("commits/writer most", lambda r: f"{r.most_commits:,}")
    row("conflicts", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r.conflicts.items())) or "0")
    row("retries", lambda r: f"{r.retries:,}")
    if any(r.gave_up for r in results):
        row("gave up after retries", lambda r: f"{r.gave_up:,}")
    if first.workload == "mixed":
        row(
            "reads/transfers/inserts",
            lambda r: "/".join(f"{r.tally.get(k, 0):,}" for k in ("reads", "transfers", "rows")),
        )
    row("invariant", lambda r: _check_mark(r.invariant_ok))
    row("integrity_check", lambda r: _check_mark(r.integrity_ok))
    return table


def _report_problems(console: Console, results: list[stress.Result]) -> None:
    for r in results:
        if r.stopped_early:
            console.print(f"{r.engine}: stopped early (Ctrl-C) after {r.elapsed_s:.1f} s")
        for what, detail in (("invariant", r.invariant_detail), ("integrity", r.integrity_detail)):
            if detail:
                console.print(f"{r.engine}: {what} broken: {detail}", markup=False, soft_wrap=True)
        for error in r.errors:
            console.print(f"{r.engine}: {error}", markup=False, soft_wrap=True)


def _verdict(stock: stress.Result, ours: stress.Result) -> str:
    failed = [r.engine for r in (stock, ours) if not r.ok]
    if failed:
        return f"Verdict: checks FAILED for {' and '.join(failed)}; see above."
    if not stock.txn_per_s:
        return "Verdict: stock SQLite committed nothing, so there is nothing to compare."
    ratio = ours.txn_per_s / stock.txn_per_s
    setup = (
        f"with {ours.writers} processes each holding a transaction open for {ours.think_ms:g} ms"
    )
    if ratio >= 1.1:
        speed = f"committed {ratio:.1f}x as many transactions per second as stock SQLite"
    elif ratio > 0.9:
        speed = "committed about as many transactions per second as stock SQLite"
    else:
        speed = f"was slower than stock SQLite ({ratio:.2f}x its transactions per second)"
    fairness = ""
    if stock.writers > 1 and stock.fewest_commits * 2 < stock.most_commits:
        # SQLite's busy handler sleeps and lets the lock holder re-take it (DESIGN 5).
        fairness = (
            f"; stock also starved a writer (fewest commits by one writer: stock "
            f"{stock.fewest_commits:,}, ours {ours.fewest_commits:,})"
        )
    return f"Verdict: {setup}, sqlite-concurrent {speed}{fairness}. Every check passed."


@app.callback()
def main() -> None:
    """Many processes writing one SQLite database at the same time.

    Run `sqlite-concurrent demo` to see parallel writers next to stock SQLite.
    Exit status: 0 all checks passed, 1 a check failed, 2 bad input or the database could not
    be used.
    """


@app.command()
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
    console.print(_table([stock, ours]))
    _report_problems(console, [stock, ours])
    console.print(_verdict(stock, ours), markup=False, soft_wrap=True)
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


@app.command("stress")
def stress_command(
    db: Annotated[
        Path,
        typer.Argument(
            help="Database file to hammer: created if missing; in an existing SQLite database "
            "only the workload's own stress_* tables are dropped and recreated.",
            show_default=False,
            metavar="DB",
        ),
    ],
    workload: Annotated[
        str, typer.Option("--workload", "-w", help=f"What each transaction does. {_WORKLOAD_HELP}.")
    ] = "disjoint",
    writers: Annotated[
        int, typer.Option("--writers", "-n", help="Number of writer processes (at least 1).")
    ] = 4,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds to run.")] = 5.0,
    think_ms: Annotated[
        float,
        typer.Option(
            "--think-ms",
            help="Milliseconds of work (a sleep) inside each transaction, between "
            "its reads and its writes.",
        ),
    ] = 2.0,
    lock_level: Annotated[
        str,
        typer.Option(
            "--lock-level",
            help="table, page or row: passed to sqlite_concurrent.connect() (ours only).",
        ),
    ] = "row",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            "-e",
            help="ours (sqlite_concurrent) or stock (stdlib sqlite3, WAL, busy_timeout, "
            "BEGIN IMMEDIATE).",
        ),
    ] = "ours",
    accounts: Annotated[
        int, typer.Option("--accounts", help="Number of accounts (transfer and mixed).")
    ] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the writers' random choices.")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help=_TIMEOUT_HELP)] = 30.0,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json", help="Also write the results as JSON to this file.", show_default=False
        ),
    ] = None,
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
    console.print(_table([result]))
    _report_problems(console, [result])
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


def _spread(low: float | None, high: float | None, fmt: str) -> str:
    return "" if low is None or high is None else f" ({low:{fmt}}-{high:{fmt}})"


def _bench_table(cells: list[dict[str, Any]], repeats: int) -> Table:
    table = Table(title=f"committed txn/s: median of {repeats} repeats (min-max)", min_width=80)
    for name in (
        "workload",
        "think ms",
        "writers",
        "stock txn/s",
        "ours txn/s",
        "ours/stock",
        "ours p99 ms",
        "checks",
    ):
        table.add_column(name, justify="left" if name == "workload" else "right")
    for c in cells:
        ok = c["ours"]["ok"] and c["stock"]["ok"]
        table.add_row(
            c["workload"],
            f"{c['think_ms']:g}",
            str(c["writers"]),
            *(
                f"{c[e]['txn_per_s']:,.0f}{_spread(c[e]['min'], c[e]['max'], ',.0f')}"
                for e in ("stock", "ours")
            ),
            "-"
            if c["ratio"] is None
            else f"[bold]{c['ratio']:.2f}x[/]{_spread(c['ratio_min'], c['ratio_max'], '.2f')}",
            f"{c['ours']['p99_ms']:.1f}",
            _check_mark(ok),
        )
    return table


@app.command("bench")
def bench_command(
    workloads: Annotated[
        str,
        typer.Option("--workloads", help="Comma-separated workloads to run (see stress)."),
    ] = "ingest,disjoint,transfer",
    writers: Annotated[
        str, typer.Option("--writers", help="Comma-separated writer process counts.")
    ] = "1,2,4",
    think_ms: Annotated[
        str,
        typer.Option("--think-ms", help="Comma-separated milliseconds of work per transaction."),
    ] = "2",
    duration: Annotated[float, typer.Option("--duration", help="Seconds per run.")] = 2.0,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Runs of every cell per engine (spread is min-max).")
    ] = 3,
    lock_level: Annotated[
        str, typer.Option("--lock-level", help="table, page or row, for ours.")
    ] = "row",
    accounts: Annotated[
        int, typer.Option("--accounts", help="Number of accounts (transfer and mixed).")
    ] = 100,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for the writers; repeat r uses seed + r.")
    ] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help=_TIMEOUT_HELP)] = 30.0,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Directory for the scratch databases (default: a temporary one).",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[
        Path, typer.Option("--json", help="Where to write every run and the summary as JSON.")
    ] = _DEFAULT_OUTPUT_DIR / "bench.json",
    chart: Annotated[
        Path, typer.Option("--chart", help="Where to write the SVG chart of txn/s per writers.")
    ] = _DEFAULT_OUTPUT_DIR / "bench.svg",
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Also print the summary as a markdown table.")
    ] = False,
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
        console.print(
            f"[{done:>3}/{total}] {r.workload:>8} think {r.think_ms:g} ms {r.writers:>2} writers "
            f"{r.engine:>5}: {r.txn_per_s:8,.0f} txn/s  p99 {r.p99_ms:6.1f} ms  "
            f"{'ok' if r.ok else 'FAILED'}",
            markup=False,
        )

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
    cells = bench.cells(results)
    console.print(_bench_table(cells, repeats))
    if markdown:
        console.print(bench.markdown(cells), markup=False, soft_wrap=True)
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
    report = bench.report(results, cells, config, started)
    _write(json_path, json.dumps(report, indent=2) + "\n")
    _write(chart, bench.svg(cells, duration, repeats, lock_level))
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


def _open_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    # Read-only: a check must not write, not even the checkpoint SQLite runs when the last
    # read-write connection to a WAL database closes.
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=timeout)


def _lock_database(db: Path, timeout: float) -> tuple[str, str]:
    """(status, detail) of the ``-locks`` sidecar: its four tables readable, who holds what."""
    try:
        view = status.read(str(db), timeout=timeout)
    except status.StatusError as e:
        return "FAIL", str(e)
    if not view.exists:
        return "ok", "absent: no sqlite_concurrent connection has opened this database"
    detail = (
        f"{len(view.holders)} holders, {len(view.transactions)} transactions, "
        f"{len(view.locks)} locks, {len(view.waiters)} waiters"
    )
    dead = [h.pid for h in view.holders if not h.alive]
    if dead:
        pids = ", ".join(map(str, dead[:5]))
        return "warn", f"{detail}; dead holders (pid {pids}) are reaped on the next open"
    return "ok", detail


def _journals(db: Path) -> tuple[str, str]:
    found = sorted(glob.glob(glob.escape(str(db)) + "-journal[0-9]*"))
    pids = [(p, p[len(str(db)) + len("-journal") :]) for p in found]
    pids = [(p, int(pid)) for p, pid in pids if pid.isdigit()]
    dead = []
    for p, pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(os.path.basename(p))
        except PermissionError:
            pass  # alive, someone else's
    if dead:
        return "FAIL", f"hot journals of dead processes: {', '.join(dead[:5])} (run recover)"
    return "ok", f"{len(pids)} journals, all of live processes" if pids else "none"


@app.command()
def check(
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
    checks: list[tuple[str, str, str]] = []
    try:
        with contextlib.closing(_open_read_only(db, timeout)) as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.Error as e:
        raise _fail(stress.describe_sqlite_error(str(db), e, timeout)) from None
    checks.append(("database", "ok", f"{pages:,} pages of {size:,} bytes, journal_mode {mode}"))
    if problems == ["ok"]:
        checks.append(("integrity_check", "ok", "ok"))
    else:
        checks.append(("integrity_check", "FAIL", "; ".join(problems[:3])))
    checks.append(("lock database", *_lock_database(db, timeout)))
    checks.append(("journals", *_journals(db)))
    wal = Path(f"{db}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if wal_size > DEFAULT_WAL_LIMIT:
        checks.append(
            (
                "WAL",
                "warn",
                f"{wal_size:,} bytes, over the {DEFAULT_WAL_LIMIT:,} "
                "byte checkpoint threshold (a long-running reader may hold it)",
            )
        )
    else:
        checks.append(("WAL", "ok", f"{wal_size:,} bytes" if wal.exists() else "no -wal file"))
    console = Console(highlight=False)
    table = Table(title=f"check {db}", min_width=66)
    for name in ("check", "status", "detail"):
        table.add_column(name)
    style = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "FAIL": "[bold red]FAIL[/]"}
    for name, outcome, detail in checks:
        table.add_row(name, style[outcome], Text(detail))
    console.print(table)
    failed = [name for name, outcome, _ in checks if outcome == "FAIL"]
    if failed:
        console.print(f"Verdict: PROBLEMS in {', '.join(failed)}; see above.", markup=False)
        raise typer.Exit(EXIT_CHECK_FAILED)
    warned = [name for name, outcome, _ in checks if outcome == "warn"]
    note = f" (warnings: {', '.join(warned)})" if warned else ""
    console.print(f"Verdict: OK, the database and its sidecar files are sound{note}.", markup=False)


# -- status --------------------------------------------------------------------------------------


@app.command("status")
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
    means no sqlite_concurrent connection has opened DB yet (exit status 0).
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

    For each dead process: the locks released, its transactions that committed (their commit
    marker is in the database: nothing to do) and those that never did (nothing of them is
    visible).  Every connection does the same when it opens; this is the on-demand version.
    """
    _sqlite_file(db, "database")
    try:
        report = recovery.recover(str(db))
    except apsw.Error as e:
        raise _fail(f"cannot recover {db}: {e}") from None
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "pid": r.pid,
                        "locks_released": r.locks_released,
                        "committed": list(r.committed),
                        "discarded": list(r.discarded),
                    }
                    for r in report
                ],
                indent=2,
            )
        )
        return
    console = Console(highlight=False)
    if not report:
        console.print(f"{db}: nothing to recover (no dead holders)", markup=False, soft_wrap=True)
        return
    table = Table(title=f"recovered {db}")
    for column in ("dead pid", "locks released", "committed txns", "discarded txns"):
        table.add_column(column)
    for r in report:
        table.add_row(
            str(r.pid),
            str(r.locks_released),
            ", ".join(map(str, r.committed)) or "-",
            ", ".join(map(str, r.discarded)) or "-",
        )
    console.print(table)
