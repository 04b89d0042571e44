"""Worker processes for tests/test_leftovers.py (importable by spawned children)."""

from __future__ import annotations

import os
import traceback

import sqlite_concurrent
from sqlite_concurrent.locking import oslock


def _lock_file(path: str) -> tuple[int, int]:
    """(device, inode) of the lock database this process holds its presence lock on."""
    st = os.fstat(oslock._fd(path + "-locks"))
    return st.st_dev, st.st_ino


def _increment(conn) -> None:
    while True:
        try:
            with conn:
                conn.execute("BEGIN")
                (n,) = conn.execute("SELECT n FROM c WHERE id = 1").fetchone()
                conn.execute("UPDATE c SET n = ? WHERE id = 1", (n + 1,))
            return
        except sqlite_concurrent.DeadlockError:
            continue  # both read, then both wanted to write: one of them goes again


def race_last_close(path, me, rounds, increments, barrier, closing, queue):
    """Each round: A opens, increments and closes while B opens on A's signal (an opener
    racing a last close); A opens again; both, open together, report the lock file they hold
    and increment; both close together (two last closes racing).  Table-level locks: two
    processes on two different lock files would both get the table and the merge would
    conflict.  Reports (commits, lock files seen together, errors)."""
    commits, together, errors = 0, [], []
    try:
        for _ in range(rounds):
            barrier.wait()
            if me == "A":
                conn = sqlite_concurrent.connect(path, lock_level="table", timeout=60)
                _increment(conn)
                commits += 1
                closing.set()
                conn.close()
                conn = sqlite_concurrent.connect(path, lock_level="table", timeout=60)
            else:
                closing.wait()
                conn = sqlite_concurrent.connect(path, lock_level="table", timeout=60)
            barrier.wait()  # both open
            together.append(_lock_file(path))
            for _ in range(increments):
                _increment(conn)
                commits += 1
            barrier.wait()
            if me == "A":
                closing.clear()
            conn.close()
            barrier.wait()  # both closed
            if me == "A":
                together.append(("after close", os.path.exists(path + "-locks")))
    except BaseException:
        errors.append(traceback.format_exc())
        barrier.abort()
    queue.put((me, commits, together, errors))


def hold_open(module_name, path, opened, release):
    """Open ``path`` with the stdlib or ours, write, then keep it open until ``release``."""
    import importlib

    module = importlib.import_module(module_name)
    conn = module.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("INSERT INTO t VALUES (?)", (os.getpid(),))
    opened.set()
    release.wait(60)
    conn.close()


def die_holding(path, opened, die):
    """Open ``path`` with ours, leave a transaction open, and die of SIGKILL on ``die``."""
    conn = sqlite_concurrent.connect(path, row_lock_delay=0)
    conn.execute("INSERT INTO t VALUES (?)", (os.getpid(),))
    opened.set()
    die.wait(120)
    os.kill(os.getpid(), 9)
