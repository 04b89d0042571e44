"""How the command line shows things: the live view of a run, result tables and verdicts.

Nothing here runs or checks anything: each function takes what :mod:`.stress`, :mod:`.bench`,
:mod:`.check` or :mod:`.recovery` produced and returns a rich renderable or a line of text, or
prints to the console it is given (the live view of a run, the report of a run's problems).
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..engine import recovery
from . import bench, check, stress

# -- the live display ----------------------------------------------------------------------------


class Monitor:
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


@contextlib.contextmanager
def live(console: Console, label: str, duration: float) -> Iterator[Callable[[stress.Live], None]]:
    """While inside, show a run's progress; yields the callback ``stress.run`` reports to."""
    monitor = Monitor(console, label, duration)
    if console.is_terminal:
        with Live(monitor, console=console, refresh_per_second=8, transient=True):
            yield monitor.update
    else:
        yield monitor.update


# -- results -------------------------------------------------------------------------------------


def _check_mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[bold red]FAILED[/]"


def results_table(results: list[stress.Result]) -> Table:
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
    row("retries", lambda r: f"{r.retries:,} (most attempts {r.most_attempts})")
    if any(r.ways for r in results):
        row("ran each way", lambda r: bench.ways_text(r.ways))
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


def report_problems(console: Console, results: list[stress.Result]) -> None:
    for r in results:
        if r.stopped_early:
            console.print(f"{r.engine}: stopped early (Ctrl-C) after {r.elapsed_s:.1f} s")
        for what, detail in (("invariant", r.invariant_detail), ("integrity", r.integrity_detail)):
            if detail:
                console.print(f"{r.engine}: {what} broken: {detail}", markup=False, soft_wrap=True)
        for error in r.errors:
            console.print(f"{r.engine}: {error}", markup=False, soft_wrap=True)


def verdict(stock: stress.Result, ours: stress.Result) -> str:
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
        # SQLite's busy handler sleeps and lets the lock holder re-take it (architecture.md, "Locks
        # and waiting").
        fairness = (
            f"; stock also starved a writer (fewest commits by one writer: stock "
            f"{stock.fewest_commits:,}, ours {ours.fewest_commits:,})"
        )
    return f"Verdict: {setup}, sqlite-concurrent {speed}{fairness}. Every check passed."


def _spread(low: float | None, high: float | None, fmt: str) -> str:
    return "" if low is None or high is None else f" ({low:{fmt}}-{high:{fmt}})"


def bench_table(cells: list[dict[str, Any]], repeats: int) -> Table:
    table = Table(title=f"committed txn/s: median of {repeats} repeats (min-max)", min_width=80)
    for name in (
        "workload",
        "think ms",
        "writers",
        "stock txn/s",
        "ours txn/s",
        "ours/stock",
        "ours p99 ms",
        "ours ways",
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
            bench.ways_text(c["ours"]["ways"]),
            _check_mark(ok),
        )
    return table


def bench_line(r: stress.Result, done: int, total: int) -> str:
    """One line per finished benchmark run, printed as the matrix goes."""
    return (
        f"[{done:>3}/{total}] {r.workload:>8} think {r.think_ms:g} ms {r.writers:>2} writers "
        f"{r.engine:>5}: {r.txn_per_s:8,.0f} txn/s  p99 {r.p99_ms:6.1f} ms  "
        f"{'ok' if r.ok else 'FAILED'}" + (f"  ({bench.ways_text(r.ways)})" if r.ways else "")
    )


# -- check and recover ---------------------------------------------------------------------------


def check_table(db: Path, findings: list[check.Finding]) -> Table:
    table = Table(title=f"check {db}", min_width=66)
    for name in ("check", "status", "detail"):
        table.add_column(name)
    style = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "FAIL": "[bold red]FAIL[/]"}
    for name, outcome, detail in findings:
        table.add_row(name, style[outcome], Text(detail))
    return table


def check_verdict(findings: list[check.Finding]) -> str:
    failed = check.named(findings, check.FAIL)
    if failed:
        return f"Verdict: PROBLEMS in {', '.join(failed)}; see above."
    warned = check.named(findings, check.WARN)
    note = f" (warnings: {', '.join(warned)})" if warned else ""
    return f"Verdict: OK, the database and its sidecar files are sound{note}."


def recovered_json(report: list[recovery.Recovered]) -> str:
    return json.dumps(
        [
            {
                "pid": r.pid,
                "locks_released": r.locks_released,
                "committed": list(r.committed),
                "discarded": list(r.discarded),
                "journal": r.journal,
                "journal_detail": r.journal_detail,
            }
            for r in report
        ],
        indent=2,
    )


def recovered_table(db: Path, report: list[recovery.Recovered]) -> Table:
    table = Table(title=f"recovered {db}")
    for column in ("dead pid", "locks released", "committed txns", "discarded txns", "journal"):
        table.add_column(column)
    for r in report:
        table.add_row(
            str(r.pid),
            str(r.locks_released),
            ", ".join(map(str, r.committed)) or "-",
            ", ".join(map(str, r.discarded)) or "-",
            r.journal + (f": {r.journal_detail}" if r.journal_detail else ""),
        )
    return table
