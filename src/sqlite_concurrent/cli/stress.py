"""Multi-process stress runs, for the CLI and the benchmarks.

Two engines run the same transactions (the workloads are in :mod:`.workloads`): ``"ours"``
(:func:`sqlite_concurrent.connect`, ``transact()`` with retries) and ``"stock"`` (stdlib
``sqlite3`` in WAL mode, every write transaction ``BEGIN IMMEDIATE``, which is how stock SQLite
serializes writers).  Both run with ``synchronous=NORMAL``.

Writers are spawned processes.  Each opens its connection, reports ready, and waits on one
start event, so they start together.  While they run, each publishes its commits, conflicts
and retries in shared counters (one slot per writer, written by it alone) for the live display;
at the end each sends a report with its latencies and tallies over a queue.  The parent process
only ever opens stdlib ``sqlite3`` connections on the database: creating the tables before the
run and checking the invariant and ``PRAGMA integrity_check`` after it.  The benchmark matrix
(many runs, both engines, repeated) is :mod:`.bench`.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
import random
import signal
import sqlite3
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..dbapi import connect
from ..errors import ConflictError
from ..locking.levels import NAMES as LOCK_LEVELS
from .workloads import WORKLOADS, Step

ENGINES = ("ours", "stock")
OURS_RETRIES = 10
DEFAULT_TIMEOUT = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"

# Children must not inherit the parent's open SQLite handles (POSIX locks are per process,
# architecture.md, "Snapshots, and the locks a close drops"), so writers are always spawned, never
# forked.
_SPAWN = multiprocessing.get_context("spawn")


class StressError(Exception):
    """A run could not start or finish; the message is one line for the user."""


@dataclass
class Result:
    """What one run measured.  Latencies are per transaction, including its retries."""

    engine: str
    workload: str
    writers: int
    duration: float
    think_ms: float
    seed: int
    lock_level: str = "row"
    repeat: int = 0
    committed: int = 0
    elapsed_s: float = 0.0
    txn_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    fewest_commits: int = 0
    most_commits: int = 0
    commits_by_writer: list[int] = field(default_factory=list)  # by writer index
    conflicts: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    most_attempts: int = 0  # of any one transaction
    gave_up: int = 0
    ways: dict[str, int] = field(default_factory=dict)  # ours: transactions run each way
    tally: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False
    invariant_ok: bool = False
    invariant_detail: str = ""
    integrity_ok: bool = False
    integrity_detail: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.invariant_ok and self.integrity_ok and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Live:
    """What the writers have done so far, for a live display (read by the parent)."""

    elapsed: float
    commits: list[int]
    conflicts: list[int]
    retries: list[int]


# -- database setup and checks (parent process, stdlib sqlite3 only) ---------------------------


def _open_stock(path: str, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=timeout, isolation_level=None)


def describe_sqlite_error(path: str, e: BaseException, timeout: float) -> str:
    """One line saying why ``path`` could not be used, with what to do about it."""
    text = str(e)
    if "locked" in text or "busy" in text:
        return (
            f"{path} is locked by another connection (waited {timeout:g} s; an exclusive lock, "
            "e.g. PRAGMA locking_mode=EXCLUSIVE, blocks everyone else); try again later or "
            "raise --timeout"
        )
    if "not a database" in text:
        return f"{path} is not a SQLite database"
    if "readonly" in text or "unable to open" in text:
        return f"cannot write {path} or its -wal/-shm files: {text}"
    return f"{path}: {text}"


def _create_tables(path: str, workload: str, writers: int, accounts: int, timeout: float) -> None:
    conn = _open_stock(path, timeout)
    try:
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise StressError(f"could not switch {path} to WAL mode")
        conn.execute("BEGIN IMMEDIATE")
        WORKLOADS[workload].create(conn, writers, accounts)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _check(
    path: str, workload: str, reports: list[dict[str, Any]], accounts: int, timeout: float
) -> tuple[str, list[str]]:
    """Return (what broke the invariant or "", integrity_check's complaints), via stdlib."""
    conn = _open_stock(path, timeout)
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        broken = WORKLOADS[workload].check(conn, reports, accounts)
        return broken, [] if integrity == ["ok"] else integrity
    finally:
        conn.close()


# -- writers (child processes) -------------------------------------------------------------------


class _Writer:
    """One writer's connection, random choices and counts; the same steps for both engines."""

    def __init__(self, cfg: dict[str, Any], index: int) -> None:
        self.workload = WORKLOADS[cfg["workload"]]
        self.engine = cfg["engine"]
        self.index = index
        self.think = cfg["think_ms"] / 1000
        self.accounts = cfg["accounts"]
        self.rng = random.Random(f"{cfg['seed']}:{index}")
        self.tally: Counter[str] = Counter()
        self.conflicts: Counter[str] = Counter()
        self.attempts = 0
        if self.engine == "ours":
            self.conn: Any = connect(cfg["path"], cfg["timeout"], lock_level=cfg["lock_level"])
        else:
            self.conn = _open_stock(cfg["path"], cfg["timeout"])
        # APSW's SQLite defaults to synchronous=FULL; compare like with like.
        self.conn.execute("PRAGMA synchronous=NORMAL")

    def _attempt(self, conn: Any, step: Step) -> dict[str, int]:
        self.attempts += 1
        # transact() swallows the conflicts it retries; committing here lets us count each
        # one by kind before re-raising it to transact(), whose own commit is then a no-op.
        try:
            tally = self.workload.execute(conn, step, self.think)
            conn.commit()
            return tally
        except ConflictError as e:
            self.conflicts[e.kind] += 1
            raise

    def _stock(self, step: Step) -> dict[str, int]:
        while True:
            self.attempts += 1
            try:
                self.conn.execute("BEGIN IMMEDIATE" if step.writes else "BEGIN")
                tally = self.workload.execute(self.conn, step, self.think)
                self.conn.execute("COMMIT")
                return tally
            except sqlite3.OperationalError as e:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if not _is_busy(e):
                    raise
                self.conflicts["busy"] += 1

    def transaction(self) -> bool:
        """Run one transaction to commit (with retries); False if ours gave up on it."""
        step = self.workload.choose(self.rng, self.index, self.tally, self.accounts)
        if self.engine == "stock":
            tally = self._stock(step)
        else:
            while True:
                try:
                    tally = self.conn.transact(self._attempt, step, retries=OURS_RETRIES)
                    break
                except ConflictError:
                    return False
                except sqlite3.OperationalError as e:  # a lock wait ran out: count, try again
                    if not _is_busy(e):
                        raise
                    self.conflicts["busy"] += 1
        self.tally.update(tally)
        return True


def _is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+, and ours
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def _one_line(e: BaseException) -> str:
    # One line, with where it was raised: the parent has no traceback to show.
    where = traceback.extract_tb(e.__traceback__)[-1]
    return (
        f"{type(e).__name__}: {e} "
        f"(at {os.path.basename(where.filename)}:{where.lineno} in {where.name})"
    )


def _report(index: int, error: str | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "commits": 0,
        "tally": {},
        "latencies": [],
        "conflicts": {},
        "retries": 0,
        "most_attempts": 0,
        "gave_up": 0,
        "ways": {},
        "start": 0.0,
        "end": 0.0,
        "error": error,
    }


def _writer_main(cfg: dict[str, Any], index: int, events: Any, results: Any, live: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    start, stop = events
    commits, conflicts, retries = live
    report = _report(index)
    try:
        writer = _Writer(cfg, index)
    except Exception as e:
        results.put(("failed", index, f"{type(e).__name__}: {e}"))
        return
    try:
        results.put(("ready", index, None))
        start.wait()
        latencies = report["latencies"]
        report["start"] = time.monotonic()
        deadline = report["start"] + cfg["duration"]
        while not stop.value and time.monotonic() < deadline:
            attempts_before = writer.attempts
            t0 = time.monotonic()
            if writer.transaction():
                latencies.append((time.monotonic() - t0) * 1000)
                report["commits"] += 1
                commits[index] = report["commits"]
            else:
                report["gave_up"] += 1
            report["retries"] += max(0, writer.attempts - attempts_before - 1)
            report["most_attempts"] = max(
                report["most_attempts"], writer.attempts - attempts_before
            )
            retries[index] = report["retries"]
            conflicts[index] = sum(writer.conflicts.values())
        report["end"] = time.monotonic()
    except BaseException as e:
        report["error"] = f"writer {index}: {_one_line(e)}"
        report["end"] = report["end"] or time.monotonic()
    finally:
        report["tally"] = dict(writer.tally)
        report["conflicts"] = dict(writer.conflicts)
        report["ways"] = dict(+getattr(writer.conn, "ways", Counter()))
        with contextlib.suppress(Exception):
            writer.conn.close()
        results.put(("done", index, report))


# -- the run -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile ``pct`` (0-100) of already sorted values; 0.0 for none."""
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
    lock_level: str = "row",
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """:raises ValueError: with a one-line reason when the arguments cannot make a run."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    if lock_level not in LOCK_LEVELS:
        raise ValueError(f"unknown lock level {lock_level!r}; choose one of table, page, row")
    if writers < 1:
        raise ValueError(f"writers must be at least 1, not {writers}")
    if not duration > 0:
        raise ValueError(f"duration must be positive, not {duration}")
    if not think_ms >= 0:
        raise ValueError(f"think time must be zero or more, not {think_ms}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be zero or more, not {timeout}")
    if workload in ("transfer", "mixed") and accounts < 2:
        raise ValueError(f"{workload} needs at least 2 accounts, not {accounts}")
    parent = os.path.dirname(os.path.abspath(db_path))
    if not os.path.isdir(parent):
        raise ValueError(f"directory {parent} does not exist")
    # The database, its -wal and -shm, and the -locks files are all created beside it.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"directory {parent} is not writable (the -wal and -locks files go there)")
    if os.path.isdir(db_path):
        raise ValueError(f"{db_path} is a directory")
    if os.path.exists(db_path):
        try:
            with open(db_path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise ValueError(f"cannot read {db_path}: {e.strerror}") from None
        if head and head != _SQLITE_MAGIC:  # an empty file is an empty database to SQLite
            raise ValueError(f"{db_path} is not a SQLite database")


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
    lock_level: str = "row",
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[Live], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Result:
    """(Re)create the workload's ``stress_*`` tables in ``db_path`` (created if missing), run
    ``writers`` processes for ``duration`` seconds, then check the workload's invariant and
    ``PRAGMA integrity_check``.

    :param progress: called about ten times a second once the writers have started.
    :param should_stop: polled as often; when it returns True the writers stop early.
    :raises ValueError: bad arguments.
    :raises StressError: the database cannot be used, or a writer cannot open it.
    """
    validate(db_path, engine, workload, writers, duration, think_ms, accounts, lock_level, timeout)
    db_path = os.path.abspath(db_path)
    try:
        _create_tables(db_path, workload, writers, accounts, timeout)
    except sqlite3.Error as e:
        raise StressError(describe_sqlite_error(db_path, e, timeout)) from None
    result = Result(engine, workload, writers, duration, think_ms, seed, lock_level)
    cfg = {
        "engine": engine,
        "workload": workload,
        "path": db_path,
        "think_ms": think_ms,
        "seed": seed,
        "accounts": accounts,
        "duration": duration,
        "lock_level": lock_level,
        "timeout": timeout,
    }
    crew = _Crew(cfg, writers)
    # Generous: covers spawning, opening (up to the timeout) and one slow last transaction.
    allowance = duration + timeout + 60
    try:
        crew.watch(allowance, progress, should_stop)
    finally:
        crew.stop()
    if crew.failures:
        raise StressError(crew.failures[min(crew.failures)])
    if crew.started_at is None:
        raise StressError("stopped before the writers started")
    result.stopped_early = bool(should_stop and should_stop())
    _conclude(result, crew.reports, db_path, allowance, accounts, timeout)
    return result


def _conclude(
    result: Result,
    reports: dict[int, Any],
    db_path: str,
    allowance: float,
    accounts: int,
    timeout: float,
) -> None:
    """Fill ``result`` in from the writers' ``reports``, the workload's invariant and
    ``PRAGMA integrity_check``."""
    for i in range(result.writers):
        if i not in reports:
            reports[i] = _report(i, f"writer {i} did not finish within {allowance:.0f} s")
    _summarize(result, list(reports.values()))
    try:
        done = [reports[i] for i in sorted(reports)]
        broken, integrity = _check(db_path, result.workload, done, accounts, timeout)
    except sqlite3.Error as e:
        raise StressError(describe_sqlite_error(db_path, e, timeout)) from None
    result.invariant_ok, result.invariant_detail = not broken, broken
    result.integrity_ok, result.integrity_detail = not integrity, "; ".join(integrity[:3])


class _Crew:
    """The writer processes of one run, started together, and what each reported."""

    def __init__(self, cfg: dict[str, Any], writers: int) -> None:
        self.path = cfg["path"]
        # A flag in shared memory, not an Event: writers check it after every transaction, and
        # an Event's check takes a lock that all of them share.
        self.start, self.stop_flag = _SPAWN.Event(), _SPAWN.RawValue("b", 0)
        self.results = _SPAWN.Queue()
        self.live = tuple(_SPAWN.Array("q", writers, lock=False) for _ in range(3))
        self.procs = [
            _SPAWN.Process(
                target=_writer_main,
                args=(cfg, i, (self.start, self.stop_flag), self.results, self.live),
                daemon=True,
            )
            for i in range(writers)
        ]
        for p in self.procs:
            p.start()
        self.reports: dict[int, dict[str, Any]] = {}
        self.ready: set[int] = set()
        self.failures: dict[int, str] = {}
        self.dead_since: dict[int, float] = {}
        self.started_at: float | None = None

    def watch(
        self,
        allowance: float,
        progress: Callable[[Live], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """Until every writer reported or failed, or ``allowance`` seconds passed: start them
        together once all are ready, and show their progress."""
        give_up_at = time.monotonic() + allowance
        writers = len(self.procs)
        while len(self.reports) + len(self.failures) < writers and time.monotonic() < give_up_at:
            now = self._next_message()
            if should_stop is not None and should_stop():
                self.stop_flag.value = 1
            if self.failures or (self.stop_flag.value and self.started_at is None):
                self.stop_flag.value = 1
                self.start.set()
            elif self.started_at is None and len(self.ready) == writers:
                self.started_at = now
                self.start.set()  # every writer has its connection open: start them together
            if self.started_at is not None and progress is not None:
                progress(Live(now - self.started_at, *(list(a) for a in self.live)))

    def _next_message(self) -> float:
        try:
            kind, index, payload = self.results.get(timeout=0.1)
        except queue.Empty:
            kind, index, payload = "idle", -1, None
        now = time.monotonic()
        if kind == "ready":
            self.ready.add(index)
        elif kind == "failed":
            self.failures[index] = f"writer {index} could not open {self.path}: {payload}"
        elif kind == "done":
            self.reports[index] = payload
        else:
            for i, p in enumerate(self.procs):
                # A dead writer's last message can still be in the pipe for a moment.
                dead = p.exitcode is not None and i not in self.reports and i not in self.failures
                if dead and now - self.dead_since.setdefault(i, now) > 2:
                    self.reports[i] = _report(i, f"writer {i} exited with {p.exitcode}")
        return now

    def stop(self) -> None:
        self.start.set()
        self.stop_flag.value = 1
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()


def _summarize(result: Result, done: list[dict[str, Any]]) -> None:
    result.errors.extend(r["error"] for r in done if r["error"])
    commits = [r["commits"] for r in done]
    latencies = sorted(x for r in done for x in r["latencies"])
    spans = [(r["start"], r["end"]) for r in done if r["start"]]
    result.committed = sum(commits)
    result.elapsed_s = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    result.txn_per_s = result.committed / result.elapsed_s if result.elapsed_s > 0 else 0.0
    result.p50_ms = percentile(latencies, 50)
    result.p95_ms = percentile(latencies, 95)
    result.p99_ms = percentile(latencies, 99)
    result.max_ms = latencies[-1] if latencies else 0.0
    result.fewest_commits, result.most_commits = min(commits), max(commits)
    result.commits_by_writer = [r["commits"] for r in sorted(done, key=lambda r: r["index"])]
    conflicts: Counter[str] = Counter()
    tally: Counter[str] = Counter()
    for r in done:
        conflicts.update(r["conflicts"])
        tally.update(r["tally"])
    result.conflicts = dict(conflicts)
    result.tally = {k: v for k, v in sorted(tally.items()) if not k.startswith("row:")}
    result.retries = sum(r["retries"] for r in done)
    result.most_attempts = max((r["most_attempts"] for r in done), default=0)
    ways: Counter[str] = Counter()
    for r in done:
        ways.update(r["ways"])
    result.ways = dict(sorted(ways.items()))
    result.gave_up = sum(r["gave_up"] for r in done)
