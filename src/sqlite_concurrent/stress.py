"""Multi-process write workloads, for the CLI and the benchmarks.

Two engines run the same transactions: ``"ours"`` (:func:`sqlite_concurrent.connect`) and
``"stock"`` (stdlib ``sqlite3`` in WAL mode, every transaction ``BEGIN IMMEDIATE``, which is how
stock SQLite serializes writers).  Each transaction reads, does ``think_ms`` of work (a sleep,
standing in for application code that runs while the transaction is open), then writes.

Workloads:

``disjoint``
    Rows are partitioned by writer; each transaction reads one of its writer's rows and writes it
    back incremented.  Nothing conflicts, so this measures pure parallelism.  Invariant: each
    row's value equals the commits its writer reported for it.
``transfer``
    Each transaction moves a random amount between two random accounts, writing balances
    computed from what it read, so a lost update would change the total.  Invariant: the sum of
    balances is unchanged.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import random
import sqlite3
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .dbapi import connect
from .errors import ConflictError

ENGINES = ("ours", "stock")
WORKLOADS = ("disjoint", "transfer")
ROWS_PER_WRITER = 4
INITIAL_BALANCE = 1000
STOCK_BUSY_TIMEOUT_MS = 60_000
OURS_RETRIES = 10

# Children must not inherit the parent's open SQLite handles (POSIX locks are per process,
# DESIGN 6), so writers are always spawned, never forked.
_SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Result:
    """What one run measured.  Latencies are per transaction, including its retries."""

    engine: str
    workload: str
    writers: int
    duration: float
    think_ms: float
    seed: int
    committed: int = 0
    elapsed_s: float = 0.0
    txn_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    fewest_commits: int = 0
    most_commits: int = 0
    conflicts: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    gave_up: int = 0
    invariant_ok: bool = False
    invariant_detail: str = ""
    integrity_ok: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.invariant_ok and self.integrity_ok and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- schema and checks (parent process, stdlib sqlite3) ----------------------------------------


def _create_schema(path: str, workload: str, writers: int, accounts: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        if workload == "disjoint":
            conn.execute("CREATE TABLE counters (id INTEGER PRIMARY KEY, writer INT, value INT)")
            conn.executemany(
                "INSERT INTO counters VALUES (?, ?, 0)",
                [
                    (w * ROWS_PER_WRITER + i, w)
                    for w in range(writers)
                    for i in range(ROWS_PER_WRITER)
                ],
            )
        else:
            conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INT NOT NULL)")
            conn.executemany(
                "INSERT INTO accounts VALUES (?, ?)",
                [(i, INITIAL_BALANCE) for i in range(accounts)],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _check(
    path: str, workload: str, reports: list[dict[str, Any]], accounts: int
) -> tuple[bool, str, bool]:
    """Return (invariant_ok, detail, integrity_ok), read through a fresh stdlib connection."""
    conn = sqlite3.connect(path)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        if workload == "disjoint":
            expected: Counter[int] = Counter()
            for report in reports:
                expected.update({int(k): v for k, v in report["per_row"].items()})
            wrong = [
                (row, value, expected[row])
                for row, value in conn.execute("SELECT id, value FROM counters ORDER BY id")
                if value != expected[row]
            ]
            detail = "; ".join(f"row {r} = {v}, commits reported {e}" for r, v, e in wrong[:5])
            return not wrong, detail, integrity
        (total,) = conn.execute("SELECT sum(balance) FROM accounts").fetchone()
        want = accounts * INITIAL_BALANCE
        return total == want, "" if total == want else f"sum {total}, expected {want}", integrity
    finally:
        conn.close()


# -- writers (child processes) -------------------------------------------------------------------


class _Writer:
    """One writer's state and transactions; the same steps for both engines."""

    def __init__(
        self,
        engine: str,
        workload: str,
        path: str,
        index: int,
        think: float,
        seed: int,
        accounts: int,
    ) -> None:
        self.engine = engine
        self.workload = workload
        self.index = index
        self.think = think
        self.accounts = accounts
        self.rng = random.Random(f"{seed}:{index}")
        self.per_row: Counter[int] = Counter()
        self.conflicts: Counter[str] = Counter()
        self.attempts = 0
        if engine == "ours":
            self.conn: Any = connect(path, timeout=60.0)
        else:
            self.conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            self.conn.execute(f"PRAGMA busy_timeout={STOCK_BUSY_TIMEOUT_MS}")
        # APSW's SQLite defaults to synchronous=FULL; compare like with like.
        self.conn.execute("PRAGMA synchronous=NORMAL")

    def _body(self, conn: Any, args: tuple[int, ...]) -> None:
        self.attempts += 1
        if self.workload == "disjoint":
            (row,) = args
            (value,) = conn.execute("SELECT value FROM counters WHERE id=?", (row,)).fetchone()
            time.sleep(self.think)
            conn.execute("UPDATE counters SET value=? WHERE id=?", (value + 1, row))
        else:
            a, b, amount = args
            (bal_a,) = conn.execute("SELECT balance FROM accounts WHERE id=?", (a,)).fetchone()
            (bal_b,) = conn.execute("SELECT balance FROM accounts WHERE id=?", (b,)).fetchone()
            time.sleep(self.think)
            conn.execute("UPDATE accounts SET balance=? WHERE id=?", (bal_a - amount, a))
            conn.execute("UPDATE accounts SET balance=? WHERE id=?", (bal_b + amount, b))

    def _ours_attempt(self, conn: Any, args: tuple[int, ...]) -> None:
        # transact() swallows the conflicts it retries; committing here lets us count each
        # one by kind before re-raising it to transact(), whose own commit is then a no-op.
        try:
            self._body(conn, args)
            conn.commit()
        except ConflictError as e:
            self.conflicts[e.kind] += 1
            raise

    def _stock_once(self, args: tuple[int, ...]) -> None:
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self._body(self.conn, args)
                self.conn.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if not _is_busy(e):
                    raise
                self.conflicts["busy"] += 1

    def transaction(self) -> bool:
        """Run one transaction to commit (with retries); False if ours gave up on it."""
        if self.workload == "disjoint":
            args: tuple[int, ...] = (
                self.index * ROWS_PER_WRITER + self.rng.randrange(ROWS_PER_WRITER),
            )
        else:
            a, b = self.rng.sample(range(self.accounts), 2)
            args = (a, b, self.rng.randint(1, 100))
        if self.engine == "stock":
            self._stock_once(args)
        else:
            try:
                self.conn.transact(self._ours_attempt, args, retries=OURS_RETRIES)
            except ConflictError:
                return False
        if self.workload == "disjoint":
            self.per_row[args[0]] += 1
        return True


def _is_busy(e: sqlite3.OperationalError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def _report(index: int, error: str | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "commits": 0,
        "per_row": {},
        "latencies": [],
        "conflicts": {},
        "retries": 0,
        "gave_up": 0,
        "start": 0.0,
        "end": 0.0,
        "error": error,
    }


def _writer_main(
    engine: str,
    workload: str,
    path: str,
    index: int,
    think: float,
    seed: int,
    accounts: int,
    duration: float,
    start: Any,
    results: Any,
    live: Any,
) -> None:
    report = _report(index)
    writer = None
    try:
        writer = _Writer(engine, workload, path, index, think, seed, accounts)
        results.put(("ready", index))
        start.wait()
        latencies = report["latencies"]
        t_start = report["start"] = time.monotonic()
        deadline = t_start + duration
        while time.monotonic() < deadline:
            attempts_before = writer.attempts
            t0 = time.monotonic()
            if writer.transaction():
                latencies.append((time.monotonic() - t0) * 1000)
                report["commits"] += 1
                live[index] = report["commits"]
            else:
                report["gave_up"] += 1
            report["retries"] += max(0, writer.attempts - attempts_before - 1)
        report["end"] = time.monotonic()
    except BaseException as e:
        # One line, but with where it was raised: the parent has no traceback to show.
        where = traceback.extract_tb(e.__traceback__)[-1]
        report["error"] = (
            f"writer {index}: {type(e).__name__}: {e} "
            f"(at {os.path.basename(where.filename)}:{where.lineno} in {where.name})"
        )
        report["end"] = report["end"] or time.monotonic()
    finally:
        if writer is not None:
            report["per_row"] = dict(writer.per_row)
            report["conflicts"] = dict(writer.conflicts)
            with contextlib.suppress(Exception):
                writer.conn.close()
        results.put(("done", report))


# -- the run -----------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def validate(
    db_path: str,
    engine: str,
    workload: str,
    writers: int,
    duration: float,
    think_ms: float,
    accounts: int = 100,
) -> None:
    """:raises ValueError: with a one-line reason when the arguments cannot make a run."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    if writers < 1:
        raise ValueError(f"writers must be at least 1, not {writers}")
    if not duration > 0:
        raise ValueError(f"duration must be positive, not {duration}")
    if not think_ms >= 0:
        raise ValueError(f"think time must be zero or more, not {think_ms}")
    if workload == "transfer" and accounts < 2:
        raise ValueError(f"transfer needs at least 2 accounts, not {accounts}")
    parent = os.path.dirname(os.path.abspath(db_path))
    if not os.path.isdir(parent):
        raise ValueError(f"directory {parent} does not exist")
    if os.path.exists(db_path):
        raise ValueError(f"{db_path} already exists; a stress run needs a fresh database path")


def run(
    db_path: str,
    engine: str,
    workload: str,
    writers: int,
    duration: float,
    think_ms: float,
    seed: int = 0,
    *,
    accounts: int = 100,
    progress: Callable[[float, int], None] | None = None,
) -> Result:
    """Create the schema in a new database at ``db_path``, run ``writers`` processes for
    ``duration`` seconds, then check the workload's invariant and ``PRAGMA integrity_check``.

    :param progress: called about ten times a second with (seconds since start, commits so far).
    :raises ValueError: bad arguments, or ``db_path`` exists or its directory does not.
    """
    validate(db_path, engine, workload, writers, duration, think_ms, accounts)
    db_path = os.path.abspath(db_path)
    _create_schema(db_path, workload, writers, accounts)
    result = Result(engine, workload, writers, duration, think_ms, seed)
    start = _SPAWN.Event()
    results = _SPAWN.Queue()
    live = _SPAWN.Array("q", writers, lock=False)  # one slot per writer, written by it alone
    procs = [
        _SPAWN.Process(
            target=_writer_main,
            args=(
                engine,
                workload,
                db_path,
                i,
                think_ms / 1000,
                seed,
                accounts,
                duration,
                start,
                results,
                live,
            ),
            daemon=True,
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    reports: dict[int, dict[str, Any]] = {}
    ready: set[int] = set()
    dead_since: dict[int, float] = {}
    started_at: float | None = None
    # Generous: covers spawning, opening and one slow transaction after the deadline.
    give_up_at = time.monotonic() + duration + 120
    try:
        while len(reports) < writers and time.monotonic() < give_up_at:
            try:
                kind, payload = results.get(timeout=0.1)
            except queue.Empty:
                kind, payload = "idle", None
            now = time.monotonic()
            if kind == "ready":
                ready.add(payload)
            elif kind == "done":
                reports[payload["index"]] = payload
            else:
                for i, p in enumerate(procs):
                    # A dead writer's last message can still be in the pipe for a moment.
                    dead = p.exitcode is not None and i not in reports
                    if dead and now - dead_since.setdefault(i, now) > 2:
                        reports[i] = _report(i, f"writer {i} exited with {p.exitcode}")
            if started_at is None and len(ready | reports.keys()) == writers:
                started_at = now
                start.set()  # every writer has its connection open: start them together
            if started_at is not None and progress is not None:
                progress(now - started_at, sum(live))
    finally:
        start.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    for i in range(writers):
        if i not in reports:
            reports[i] = _report(i, f"writer {i} did not finish within {duration + 120:.0f} s")
    done = list(reports.values())
    result.errors.extend(r["error"] for r in done if r["error"])
    commits = [r["commits"] for r in done] + [0] * (writers - len(done))
    latencies = sorted(x for r in done for x in r["latencies"])
    spans = [(r["start"], r["end"]) for r in done if r["start"]]
    result.committed = sum(commits)
    result.elapsed_s = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    result.txn_per_s = result.committed / result.elapsed_s if result.elapsed_s > 0 else 0.0
    result.p50_ms = _percentile(latencies, 50)
    result.p95_ms = _percentile(latencies, 95)
    result.p99_ms = _percentile(latencies, 99)
    result.max_ms = latencies[-1] if latencies else 0.0
    result.fewest_commits, result.most_commits = min(commits), max(commits)
    conflicts: Counter[str] = Counter()
    for r in done:
        conflicts.update(r["conflicts"])
    result.conflicts = dict(conflicts)
    result.retries = sum(r["retries"] for r in done)
    result.gave_up = sum(r["gave_up"] for r in done)
    result.invariant_ok, result.invariant_detail, result.integrity_ok = _check(
        db_path, workload, done, accounts
    )
    return result
