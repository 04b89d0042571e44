"""Several connections in one process, in different threads, plus another process, all writing
at once: the same results and guarantees as across processes (POSIX locks are per process, so
the library pairs every kernel lock with a process mutex)."""

from __future__ import annotations

import threading

import pytest
from conftest import SPAWN, integrity_ok, stock_apsw
from workers import transfers_signalling

import sqlite_concurrent

ACCOUNTS = 50


def _thread_transfers(path, level, seed, count, errors, done):
    import random

    rng = random.Random(seed)
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=60)
    try:
        for _ in range(count):
            a, b = rng.sample(range(ACCOUNTS), 2)

            def move(c, a=a, b=b):
                (bal,) = c.execute("SELECT balance FROM accounts WHERE id=?", (a,)).fetchone()
                c.execute("UPDATE accounts SET balance=? WHERE id=?", (bal - 1, a))
                c.execute("UPDATE accounts SET balance=balance+1 WHERE id=?", (b,))

            conn.transact(move, retries=10_000)
            done.append(1)
    except BaseException as e:  # reported to the test thread
        errors.append(repr(e))
    finally:
        conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("level", ["row", "page", "table"])
def test_two_threads_and_a_process_transfer_concurrently(db_path, level):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.executemany("INSERT INTO accounts VALUES (?, 100)", [(i,) for i in range(ACCOUNTS)])
    conn.commit()
    conn.close()

    start, queue, running = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event()
    other = SPAWN.Process(
        target=transfers_signalling,
        args=(start, queue, db_path, level, 9, 200, ACCOUNTS, running),
    )
    other.start()
    errors: list[str] = []
    done: list[int] = []
    threads = [
        threading.Thread(target=_thread_transfers, args=(db_path, level, s, 60, errors, done))
        for s in (1, 2)
    ]
    start.set()
    # The threads start once the other process is committing, so all three overlap.
    assert running.wait(60)
    for t in threads:
        t.start()
    for t in threads:
        t.join(170)
    assert queue.get(timeout=170) == 200
    other.join(30)
    assert errors == [] and len(done) == 120 and other.exitcode == 0
    check = stock_apsw(db_path)
    assert check.execute("SELECT sum(balance), count(*) FROM accounts").fetchone() == (
        100 * ACCOUNTS,
        ACCOUNTS,
    )
    moved = check.execute("SELECT count(*) FROM accounts WHERE balance != 100").fetchone()[0]
    check.close()
    assert moved > 0
    assert integrity_ok(db_path)


@pytest.mark.timeout(60)
def test_write_skew_between_threads_follows_the_lock_level(db_path):
    """Isolation across threads is the same as across processes: row level lets the two
    doctors both go off call (snapshot isolation), page level does not."""
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("CREATE TABLE doctors(id INTEGER PRIMARY KEY, on_call INTEGER NOT NULL)")
    setup.execute("INSERT INTO doctors VALUES (1, 1)")
    setup.execute("INSERT INTO doctors VALUES (2, 1)")
    setup.commit()
    setup.close()
    results = {}
    for level in ("row", "page"):
        both_read = threading.Barrier(2)
        outcomes = []

        def doctor(me, other, level=level, both_read=both_read, outcomes=outcomes):
            c = sqlite_concurrent.connect(db_path, lock_level=level)
            c.execute("BEGIN")
            (on,) = c.execute("SELECT on_call FROM doctors WHERE id=?", (other,)).fetchone()
            both_read.wait(30)
            if on:
                c.execute("UPDATE doctors SET on_call = 0 WHERE id = ?", (me,))
            try:
                c.commit()
                outcomes.append("committed")
            except sqlite_concurrent.ConflictError:
                outcomes.append("conflict")
            c.close()

        ts = [
            threading.Thread(target=doctor, args=(1, 2)),
            threading.Thread(target=doctor, args=(2, 1)),
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        results[level] = sorted(outcomes)
        reset = sqlite_concurrent.connect(db_path)
        reset.execute("UPDATE doctors SET on_call = 1")
        reset.commit()
        reset.close()
    assert results == {"row": ["committed", "committed"], "page": ["committed", "conflict"]}
