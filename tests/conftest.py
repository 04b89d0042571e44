from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path

import apsw
import pytest

# Spawned children import the workers module by name; they never inherit our open connections.
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "app.db")


def stock(path: str) -> sqlite3.Connection:
    """A stdlib connection, for processes that have not opened the file with sqlite_concurrent.

    Two SQLite libraries in one process (the stdlib's and APSW's) drop each other's POSIX
    locks, so sqlite_concurrent refuses the stdlib on a file this process has opened with it
    (see the README's limits), even after our connections to it closed.  In-process stock
    access there uses :func:`stock_apsw`, which is stock SQLite through the same library.
    """
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    return conn


def stock_apsw(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.set_busy_timeout(60_000)
    return conn


def lock_rows(db_path: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of ``sql`` on the lock database ``db_path-locks``.  One that is absent (the last
    process to close the database removes it) or not set up yet holds no state, so it is
    queried as an empty one; the query never creates the file."""
    from sqlite_concurrent.locking import lockdb

    path = db_path + "-locks"
    conn = None
    if os.path.exists(path):
        conn = stock_apsw(path)
        if not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'waiters'").fetchall():
            conn.close()
            conn = None
    if conn is None:
        conn = apsw.Connection(":memory:")
        conn.execute(lockdb._SCHEMA)
        for column, kind in lockdb._V3_COLUMNS:
            conn.execute(f"ALTER TABLE transactions ADD COLUMN {column} {kind}")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def integrity_ok(path: str) -> bool:
    """PRAGMA integrity_check through APSW's SQLite: callers may have ours open on ``path``."""
    conn = stock_apsw(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def run_workers(target, args_list, timeout: float = 90):
    """Start one spawned process per args tuple behind a start event; return their results.

    Each target is called as ``target(start_event, queue, *args)`` and must put exactly one
    result on the queue.  Fails the test if any child exits non-zero.
    """
    start = SPAWN.Event()
    queue = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(start, queue, *args)) for args in args_list]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    return results


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    """Poll a condition that, once true, stays true until the test acts (a waiter has queued,
    a transaction is ready): no race with a timer, the timeout only bounds a broken run."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def hold_in_child(path: str, statements: list[str], mode: str | None = None):
    """A child process with ``statements`` run in an open transaction (in ``mode``); it
    commits once the returned ``proceed`` is set, then puts "committed" on the returned
    queue."""
    from workers import hold_transaction

    start, queue, ready, proceed = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Event()
    proc = SPAWN.Process(
        target=hold_transaction, args=(start, queue, path, statements, ready, proceed, mode)
    )
    proc.start()
    start.set()
    assert ready.wait(60), "holder never opened its transaction"
    return proc, queue, proceed


def merge_lock_awaited(path: str) -> bool:
    """Whether a process waits in the kernel for the merge lock of the database at ``path``:
    /proc/locks lists a blocked request with ``->``."""
    from sqlite_concurrent.locking import oslock

    inode = os.stat(path + "-locks").st_ino
    merge_byte = oslock.offset(oslock.MERGE)
    with open("/proc/locks") as f:
        rows = [line.split() for line in f]
    return any(
        len(r) > 7 and r[1] == "->" and r[6].endswith(f":{inode}") and int(r[7]) == merge_byte
        for r in rows
    )


def in_thread(fn):
    """Run ``fn`` in a thread; returns (thread, done event, outcome list)."""
    done, outcome = threading.Event(), []

    def run():
        try:
            outcome.append(("ok", fn()))
        except BaseException as e:
            outcome.append(("error", e))
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, outcome


def make_accounts(path: str, accounts: int, balance: int) -> None:
    """The transfer workload's table: ``accounts`` rows of ``balance`` each."""
    import sqlite_concurrent

    conn = sqlite_concurrent.connect(path)
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, balance) for i in range(accounts)])
    conn.commit()
    conn.close()


def program_or_skip(name: str, install: str) -> str:
    """The path of ``name`` (see :func:`installed_program`), or skip the test saying how to
    install it."""
    found = installed_program(name)
    if found is None:
        pytest.skip(f"{name} not found beside this Python or on PATH: {install}")
    return found


def installed_program(name: str) -> str | None:
    """A console script installed with this interpreter's packages (``pip install`` puts it
    beside ``python``, which need not be on PATH), else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


@pytest.fixture
def optimistic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections that name no mode run optimistically, in this process and in the ones it
    spawns: for tests of the optimistic machinery (conflicts, row locks, merges), whose
    transactions overlap in one thread or wait for each other across processes."""
    monkeypatch.setenv("SQLITE_CONCURRENT_MODE", "optimistic")
