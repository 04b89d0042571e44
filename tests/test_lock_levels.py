"""Table, page and row lock levels: isolation, waiting, deadlocks and dead holders."""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest
from conftest import SPAWN, integrity_ok, run_workers, stock_apsw
from workers import (
    doctor,
    hammer_table,
    hold_locks_until_killed,
    level_transfers,
    lock_two_tables,
    update_after_kill,
    wait_until_visible,
)

import sqlite_concurrent

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")


def _schema(path: str, sql: str) -> None:
    conn = sqlite_concurrent.connect(path)
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.commit()
    conn.close()


def _doctors(path: str) -> None:
    _schema(
        path,
        "CREATE TABLE doctors(id INTEGER PRIMARY KEY, on_call INTEGER NOT NULL);"
        "INSERT INTO doctors VALUES (1, 1);"
        "INSERT INTO doctors VALUES (2, 1)",
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("level", "allowed"), [("row", True), ("page", False), ("table", False)])
def test_write_skew_allowed_only_at_row_level(db_path, level, allowed):
    """Two doctors each check the other is on call, then go off call.  Snapshot isolation (row)
    lets both commit, leaving nobody on call; page and table levels are serializable."""
    _doctors(db_path)
    ready1, ready2, proceed = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    start, queue = SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=doctor, args=(start, queue, db_path, level, 1, 2, ready1, proceed)),
        SPAWN.Process(target=doctor, args=(start, queue, db_path, level, 2, 1, ready2, proceed)),
    ]
    for p in procs:
        p.start()
    start.set()
    # Both have read before either writes: the interleaving that produces the skew.
    assert ready1.wait(30) and ready2.wait(30)
    proceed.set()
    outcomes = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    conn = stock_apsw(db_path)
    on_call = conn.execute("SELECT sum(on_call) FROM doctors").fetchone()[0]
    conn.close()
    if allowed:
        assert outcomes == ["committed", "committed"]
        assert on_call == 0
    else:
        assert outcomes[1] == "committed"
        assert outcomes[0] in ("ConflictError", "DeadlockError")
        assert on_call == 1


@pytest.mark.timeout(60)
def test_opposite_lock_order_is_a_deadlock_resolved_within_a_second(db_path):
    _schema(
        db_path,
        "CREATE TABLE a(v INTEGER); CREATE TABLE b(v INTEGER);"
        "INSERT INTO a VALUES (0); INSERT INTO b VALUES (0)",
    )
    a_locked, b_locked = SPAWN.Event(), SPAWN.Event()
    results = run_workers(
        lock_two_tables,
        [(db_path, "a", "b", a_locked, b_locked), (db_path, "b", "a", b_locked, a_locked)],
    )
    outcomes = sorted(r[0] for r in results)
    assert outcomes == ["committed", "deadlock"]
    assert max(r[1] for r in results if r[0] == "deadlock") < 1.0
    conn = stock_apsw(db_path)
    assert conn.execute("SELECT (SELECT v FROM a), (SELECT v FROM b)").fetchone() == (1, 1)
    conn.close()


@pytest.mark.timeout(120)
def test_table_level_is_fair_under_contention(db_path):
    """8 processes, one hot table, 2 ms of work inside each transaction, for 5 s."""
    _schema(
        db_path,
        "CREATE TABLE counter(id INTEGER PRIMARY KEY, v INTEGER);INSERT INTO counter VALUES (0, 0)",
    )
    results = run_workers(hammer_table, [(db_path, w, 5.0, 0.002) for w in range(8)], timeout=110)
    turns = [r[1] for r in results]
    commits = [len(t) for t in turns]
    assert min(commits) > 0
    assert min(commits) / max(commits) >= 0.5, commits
    # Every commit took one turn of the counter: none lost, none taken twice.
    assert sorted(v for t in turns for v in t) == list(range(1, sum(commits) + 1))
    # FIFO waits: while a writer waits for its next turn, each of the 7 others commits about
    # once.  Counted in turns, not seconds, so a loaded machine cannot fail it; a lock that
    # lets others barge ahead (stock SQLite's busy handler starved a writer for 5 s) shows gaps
    # of hundreds.
    gaps = [b - a - 1 for t in turns for a, b in itertools.pairwise(t)]
    assert max(gaps) <= 4 * (len(turns) - 1), sorted(gaps)[-10:]
    conn = stock_apsw(db_path)
    assert conn.execute("SELECT v FROM counter").fetchone() == (sum(commits),)
    conn.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("level", "table", "where"), [("table", "a", ""), ("row", "b", "WHERE id = 1")]
)
def test_killed_lock_holder_releases_waiters_within_a_second(db_path, level, table, where):
    _schema(
        db_path,
        "CREATE TABLE a(id INTEGER PRIMARY KEY, v INTEGER);"
        "CREATE TABLE b(id INTEGER PRIMARY KEY, v INTEGER);"
        "INSERT INTO a VALUES (1, 0); INSERT INTO b VALUES (1, 0)",
    )
    start, queue, ready = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event()
    holder = SPAWN.Process(target=hold_locks_until_killed, args=(start, queue, db_path, ready))
    waiter = SPAWN.Process(
        target=update_after_kill, args=(start, queue, db_path, level, table, where, ready)
    )
    holder.start()
    waiter.start()
    start.set()
    assert ready.wait(30)
    # The waiter blocks on the holder's lock; kill the holder once the waiter is queued.
    locks = stock_apsw(db_path + "-locks")
    while not locks.execute("SELECT count(*) FROM waiters").fetchone()[0]:
        assert waiter.is_alive()
    killed_at = time.monotonic()
    os.kill(holder.pid, signal.SIGKILL)
    waited = queue.get(timeout=30)
    released_after = time.monotonic() - killed_at
    holder.join(10)
    waiter.join(10)
    assert waiter.exitcode == 0 and isinstance(waited, float)
    assert released_after < 1.0
    assert locks.execute("SELECT count(*) FROM locks").fetchone() == (0,)
    assert locks.execute("SELECT count(*) FROM transactions").fetchone() == (0,)
    locks.close()
    conn = stock_apsw(db_path)
    assert conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone() == (10,)
    conn.close()


def _two(db_path, level="row", **kw):
    a = sqlite_concurrent.connect(
        db_path, lock_level=level, timeout=10, check_same_thread=False, **kw
    )
    b = sqlite_concurrent.connect(
        db_path, lock_level=level, timeout=10, check_same_thread=False, **kw
    )
    return a, b


@pytest.mark.timeout(60)
@pytest.mark.parametrize("holder_commits", [True, False])
def test_row_waiter_conflicts_if_holder_commits_and_proceeds_if_it_rolls_back(
    db_path, holder_commits
):
    import threading

    _schema(
        db_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO t VALUES (1, 0)"
    )
    holder, waiter = _two(db_path)
    holder.execute("UPDATE t SET v = 1 WHERE id = 1")  # holds row:t:1
    wait_until_visible(db_path, "row:t:1")  # written a moment after the statement
    outcome = {}

    def wait_for_row():
        waiter.execute("BEGIN")
        waiter.execute("SELECT v FROM t").fetchall()
        try:
            waiter.execute("UPDATE t SET v = 2 WHERE id = 1")
            waiter.commit()
            outcome["result"] = "committed"
        except sqlite_concurrent.ConflictError as e:
            outcome["result"] = (e.kind, e.table, e.key, waiter.in_transaction)

    thread = threading.Thread(target=wait_for_row)
    thread.start()
    locks = stock_apsw(db_path + "-locks")
    while not locks.execute("SELECT count(*) FROM waiters").fetchone()[0]:
        assert thread.is_alive()
    locks.close()
    if holder_commits:
        holder.commit()
    else:
        holder.rollback()
    thread.join(30)
    final = stock_apsw(db_path).execute("SELECT v FROM t").fetchone()
    if holder_commits:
        assert outcome["result"] == ("data", "t", (1,), True)  # to be rolled back
        assert final == (1,)
    else:
        assert outcome["result"] == "committed"
        assert final == (2,)
    holder.close()
    waiter.close()


@pytest.mark.timeout(60)
def test_ten_thousand_row_locks_escalate_to_a_table_lock(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v INTEGER)")
    conn.executemany("INSERT INTO big VALUES (?, 0)", [(i,) for i in range(10_000)])
    conn.commit()
    conn.execute("UPDATE big SET v = v + 1")
    held = dict(stock_apsw(db_path + "-locks").execute("SELECT resource, mode FROM locks"))
    assert held == {"table:big": "X"}
    conn.commit()
    assert stock_apsw(db_path).execute("SELECT sum(v) FROM big").fetchone() == (10_000,)
    conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"])
def test_row_locks_held_across_statements_escalate_when_they_pass_the_threshold(db_path, deferred):
    # Each statement stays under the threshold; the locks the transaction already holds
    # bring it over, at the fourth statement, and from then on the table lock covers it.
    # Escalating writes at once even where row locks are otherwise deferred.
    delay = 60 if deferred else 0
    conn = sqlite_concurrent.connect(db_path, escalate_at=10, row_lock_delay=delay)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(40)])
    conn.commit()
    locks = stock_apsw(db_path + "-locks")

    def held():
        return sorted(locks.execute("SELECT resource, mode FROM locks"))

    for first in (0, 3, 6):
        conn.execute("UPDATE t SET v = 1 WHERE id BETWEEN ? AND ?", (first, first + 2))
    assert held() == ([] if deferred else [(f"row:t:{i}", "X") for i in sorted(range(9), key=str)])
    conn.execute("UPDATE t SET v = 1 WHERE id BETWEEN 9 AND 11")
    assert ("table:t", "X") in held()
    conn.execute("UPDATE t SET v = 1 WHERE id = 30")
    assert "row:t:30" not in dict(held())
    conn.commit()
    assert held() == []
    assert stock_apsw(db_path).execute("SELECT sum(v) FROM t").fetchone() == (13,)
    locks.close()
    conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("level", ["row", "page", "table"])
def test_bank_transfers_keep_the_sum_at_every_level(db_path, level):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.executemany("INSERT INTO accounts VALUES (?, 1000)", [(i,) for i in range(100)])
    conn.commit()
    conn.close()
    results = run_workers(
        level_transfers, [(db_path, level, seed, 100, 100) for seed in range(4)], timeout=170
    )
    assert results == [100] * 4
    check = stock_apsw(db_path)
    assert check.execute("SELECT sum(balance), count(*) FROM accounts").fetchone() == (100_000, 100)
    check.close()
    assert integrity_ok(db_path)


@pytest.mark.timeout(60)
def test_lock_wait_times_out_with_database_is_locked(db_path):
    import sqlite3

    _schema(
        db_path, "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO t VALUES (1, 0)"
    )
    holder = sqlite_concurrent.connect(db_path, lock_level="table")
    holder.execute("UPDATE t SET v = 1")
    # Another process waits (a thread of this one would be refused at once, as a deadlock).
    queue = SPAWN.Queue()
    proc = SPAWN.Process(target=_timeout_child, args=(db_path, queue))
    proc.start()
    kind, resource, pid, message_start = queue.get(timeout=30)
    proc.join(10)
    holder.rollback()
    holder.close()
    assert kind == "LockTimeoutError"
    assert (resource, pid) == ("table:t", os.getpid())
    assert message_start == "database is locked"
    assert issubclass(sqlite_concurrent.LockTimeoutError, sqlite3.OperationalError)


def _timeout_child(path, queue):
    conn = sqlite_concurrent.connect(path, lock_level="table", timeout=0.3)
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT * FROM t").fetchall()
    except sqlite_concurrent.LockTimeoutError as e:
        queue.put((type(e).__name__, e.resource, e.holder_pid, str(e)[:18]))
        # The transaction is still usable after a table-level timeout, as in the stdlib.
        conn.rollback()
    conn.close()
