"""The ``sqlite-concurrent`` command line: a demo against stock SQLite, and stress runs."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import stress

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True, highlight=False).print(f"error: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TextColumn("{task.fields[commits]:>7} commits"),
        TimeElapsedColumn(),
        console=console,
    )


def _run_with_progress(
    progress: Progress,
    label: str,
    db_path: str,
    engine: str,
    workload: str,
    writers: int,
    duration: float,
    think_ms: float,
    seed: int,
    accounts: int,
) -> stress.Result:
    task = progress.add_task(label, total=duration, commits=0)

    def update(elapsed: float, commits: int) -> None:
        progress.update(task, completed=min(elapsed, duration), commits=commits)

    result = stress.run(
        db_path,
        engine,
        workload,
        writers,
        duration,
        think_ms,
        seed,
        accounts=accounts,
        progress=update,
    )
    progress.update(task, completed=duration, commits=result.committed)
    return result


def _check_mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[bold red]FAILED[/]"


def _table(results: list[stress.Result]) -> Table:
    first = results[0]
    table = Table(
        title=f"{first.workload}: {first.writers} writers, {first.think_ms:g} ms of work "
        f"per transaction, {first.duration:g} s",
        min_width=66,
    )
    table.add_column("")
    for r in results:
        table.add_column(r.engine, justify="right")

    def row(label: str, cell) -> None:
        table.add_row(label, *(cell(r) for r in results))

    row("transactions/s", lambda r: f"{r.txn_per_s:,.0f}")
    by_engine = {r.engine: r for r in results}
    if {"stock", "ours"} <= by_engine.keys() and by_engine["stock"].txn_per_s:
        ratio = by_engine["ours"].txn_per_s / by_engine["stock"].txn_per_s
        row("ratio ours/stock", lambda r: f"[bold]{ratio:.2f}x[/]" if r.engine == "ours" else "")
    row("committed", lambda r: f"{r.committed:,}")
    row("latency p50 ms", lambda r: f"{r.p50_ms:.1f}")
    row("latency p99 ms", lambda r: f"{r.p99_ms:.1f}")
    row("latency max ms", lambda r: f"{r.max_ms:.1f}")
    row("commits/writer fewest", lambda r: f"{r.fewest_commits:,}")
    row("commits/writer most", lambda r: f"{r.most_commits:,}")
    row("conflicts", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r.conflicts.items())) or "0")
    row("retries", lambda r: f"{r.retries:,}")
    row("invariant", lambda r: _check_mark(r.invariant_ok))
    row("integrity_check", lambda r: _check_mark(r.integrity_ok))
    return table


def _report_problems(console: Console, results: list[stress.Result]) -> None:
    for r in results:
        if r.invariant_detail:
            console.print(
                f"{r.engine}: invariant broken: {r.invariant_detail}", markup=False, soft_wrap=True
            )
        if r.gave_up:
            console.print(
                f"{r.engine}: {r.gave_up} transactions gave up after retries", markup=False
            )
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
    with (
        tempfile.TemporaryDirectory(prefix="sqlite-concurrent-demo-") as tmp,
        _progress(console) as progress,
    ):
        for engine in ("stock", "ours"):
            results[engine] = _run_with_progress(
                progress,
                f"{engine} ({DEMO_WRITERS} writers)",
                os.path.join(tmp, f"{engine}.db"),
                engine,
                "disjoint",
                DEMO_WRITERS,
                duration,
                DEMO_THINK_MS,
                0,
                100,
            )
    stock, ours = results["stock"], results["ours"]
    console.print(_table([stock, ours]))
    _report_problems(console, [stock, ours])
    console.print(_verdict(stock, ours), markup=False, soft_wrap=True)
    if not (stock.ok and ours.ok):
        raise typer.Exit(1)


@app.command("stress")
def stress_command(
    db: Annotated[
        Path,
        typer.Argument(
            help="Path of a NEW database file to create and hammer (its directory must exist).",
            show_default=False,
            metavar="DB",
        ),
    ],
    workload: Annotated[
        str,
        typer.Option(
            "--workload",
            "-w",
            help="disjoint (each writer updates only its own rows) or transfer (move random "
            "amounts between random accounts; the total must not change).",
        ),
    ] = "disjoint",
    writers: Annotated[
        int, typer.Option("--writers", "-n", help="Number of writer processes (at least 1).")
    ] = 4,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds to run.")] = 5.0,
    think_ms: Annotated[
        float,
        typer.Option("--think-ms", help="Milliseconds of work (a sleep) inside each transaction."),
    ] = 2.0,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            "-e",
            help="ours (sqlite_concurrent) or stock (stdlib sqlite3, WAL, BEGIN IMMEDIATE).",
        ),
    ] = "ours",
    accounts: Annotated[
        int, typer.Option("--accounts", help="Number of accounts in the transfer workload.")
    ] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the writers' random choices.")] = 0,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json", help="Also write the results as JSON to this file.", show_default=False
        ),
    ] = None,
) -> None:
    """Run one engine on one workload and print its results table.

    Afterwards the workload's invariant and PRAGMA integrity_check are verified; the exit
    status is non-zero if either fails.
    """
    try:
        stress.validate(str(db), engine, workload, writers, duration, think_ms, accounts)
    except ValueError as e:
        raise _fail(str(e)) from None
    if json_path is not None and not json_path.parent.resolve().is_dir():
        raise _fail(f"directory {json_path.parent.resolve()} for --json does not exist")
    console = Console(highlight=False)
    try:
        with _progress(console) as progress:
            result = _run_with_progress(
                progress,
                f"{engine} ({writers} writers)",
                str(db),
                engine,
                workload,
                writers,
                duration,
                think_ms,
                seed,
                accounts,
            )
    except (OSError, sqlite3.Error, ValueError) as e:
        raise _fail(str(e)) from None
    console.print(_table([result]))
    _report_problems(console, [result])
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as e:
            raise _fail(f"cannot write {json_path}: {e.strerror}") from None
    if not result.ok:
        raise typer.Exit(1)
