"""The lock database records holders and live transactions, and forgets dead ones."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import SPAWN, lock_rows, stock_apsw
from workers import wait_until_visible

import sqlite_concurrent
from sqlite_concurrent.commit import merge
from sqlite_concurrent.locking.grants import Victim
from sqlite_concurrent.locking.lockdb import LockDB
from sqlite_concurrent.locking.processes import holder_alive, process_start_time

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")


def _open_txn_and_wait(path, ready, queue):
    conn = sqlite_concurrent.connect(path)
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = 1")
    wait_until_visible(path)  # registered with its row lock, a moment after the statement
    queue.put(os.getpid())
    ready.set()
    # Killed with SIGKILL by the test while in this state.
    SPAWN.Event().wait(120)


def _locks(path):
    holders = lock_rows(path, "SELECT pid, start_time FROM holders ORDER BY pid")
    txns = lock_rows(
        path, "SELECT txn_id, pid, lock_level, state FROM transactions ORDER BY txn_id"
    )
    return holders, txns


@pytest.mark.timeout(60)
def test_holder_and_transaction_are_registered_and_removed(db_path):
    # Row locks written at once, so the transaction registers with its first statement.
    conn = sqlite_concurrent.connect(db_path, row_lock_delay=0)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    holders, txns = _locks(db_path)
    assert holders == [(os.getpid(), process_start_time(os.getpid()))]
    assert txns == []
    conn.execute("INSERT INTO t VALUES (1, 1)")
    holders, txns = _locks(db_path)
    assert [(pid, level, state) for _, pid, level, state in txns] == [
        (os.getpid(), "row", "active")
    ]
    conn.commit()
    assert _locks(db_path)[1] == []
    assert stock_apsw(db_path).execute("SELECT * FROM t").fetchall() == [(1, 1)]
    conn.close()
    assert _locks(db_path) == ([], [])


@pytest.mark.timeout(60)
def test_transaction_ids_never_repeat_even_if_the_lock_database_is_deleted(db_path):
    """Ids key the commit markers group commit leaves in the database: a new lock database
    starts above the highest marker, so no new transaction can look committed."""
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    conn.commit()
    conn.close()
    # As a group merge leaves them (tests/test_group_commit.py makes real ones).
    stock = stock_apsw(db_path)
    stock.execute(f"CREATE TABLE {merge.MARKER_TABLE}(txn_id INTEGER PRIMARY KEY, committed_at)")
    stock.execute(f"INSERT INTO {merge.MARKER_TABLE} VALUES (1000, 0)")
    stock.close()
    for suffix in ("-locks", "-locks-wal", "-locks-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    conn = sqlite_concurrent.connect(db_path, lock_level="table")
    conn.execute("INSERT INTO t VALUES (2, 2)")
    (txn_id,) = [t[0] for t in _locks(db_path)[1]]
    assert txn_id > 1000
    conn.commit()
    conn.close()


@pytest.mark.timeout(60)
def test_killed_holder_is_reaped_by_the_next_process_that_opens(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    conn.execute("INSERT INTO t VALUES (1, 0)")
    conn.commit()
    conn.close()
    ready, queue = SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_open_txn_and_wait, args=(db_path, ready, queue))
    child.start()
    pid = queue.get(timeout=30)
    assert ready.wait(30)
    holders, txns = _locks(db_path)
    assert pid in [h[0] for h in holders] and [t[1] for t in txns] == [pid]
    os.kill(pid, signal.SIGKILL)
    child.join(30)
    conn = sqlite_concurrent.connect(db_path)
    holders, txns = _locks(db_path)
    assert pid not in [h[0] for h in holders]
    assert txns == []
    # Its uncommitted update never reached the database.
    assert conn.execute("SELECT v FROM t").fetchall() == [(0,)]
    conn.close()


def test_pid_reuse_is_told_apart_by_start_time():
    me = os.getpid()
    assert holder_alive(me, process_start_time(me))
    assert not holder_alive(me, process_start_time(me) + 1)


def test_a_transaction_queued_behind_an_exclusive_operation_wakes_it(db_path):
    """A transaction that begins while an exclusive operation waits keeps it waiting (it is
    live) until it queues behind it for ``db`` in S mode; queuing must wake the operation, or
    it sleeps until its timeout with nothing in its way."""
    sqlite_concurrent.connect(db_path).close()
    ldb = LockDB(db_path)
    try:
        first, _ = ldb.begin("row")
        excl, _ = ldb.begin("row")
        blockers, _ = ldb.grants.try_acquire(excl, [("db", "X")], queue=True)
        assert [b.txn_id for b in blockers] == [first]
        late, gated = ldb.begin("row")
        assert gated
        ldb.end(first)
        blockers, _ = ldb.grants.try_acquire(excl, [("db", "X")], queue=True)
        assert [b.txn_id for b in blockers] == [late]  # live, not queued yet
        blockers, wake = ldb.grants.try_acquire(late, [("db", "S")], queue=True)
        assert [b.txn_id for b in blockers] == [excl]
        assert excl in wake
        assert ldb.grants.try_acquire(excl, [("db", "X")], queue=True)[0] == []
    finally:
        ldb.close()


@pytest.mark.timeout(60)
def test_a_woken_waiter_looks_again_without_writing_and_breaks_a_cycle_left_behind(db_path):
    """A woken waiter first reads whether it is still blocked; it tries again in full (which
    writes, and breaks deadlocks) only when it may be granted or is in a wait-for cycle.
    A cycle can be left behind: the victim picked to break one cycle may not be in another
    (a waiter queued in S mode between two that want X)."""
    sqlite_concurrent.connect(db_path).close()
    ldb = LockDB(db_path)
    try:
        holder, _ = ldb.begin("row")
        ldb.grants.try_acquire(holder, [("table:t", "X")], queue=True)
        waiter, _ = ldb.begin("row")
        blockers, _ = ldb.grants.try_acquire(waiter, [("table:t", "X")], queue=True)
        assert [b.txn_id for b in blockers] == [holder]
        before = os.stat(db_path + "-locks-wal").st_mtime_ns
        still = ldb.grants.still_blocked(waiter, [("table:t", "X")], frozenset())
        assert [b.txn_id for b in still] == [holder]
        assert os.stat(db_path + "-locks-wal").st_mtime_ns == before  # nothing written
        ldb.end(holder)
        assert ldb.grants.still_blocked(waiter, [("table:t", "X")], frozenset()) == []
        assert ldb.grants.try_acquire(waiter, [("table:t", "X")], queue=True)[0] == []
        ldb.end(waiter)

        # Two transactions that both want ``db`` in X mode, each live for the other: a cycle
        # that no victim was picked for.
        first, _ = ldb.begin("row")
        second, _ = ldb.begin("row")
        with ldb.writing() as c:
            for txn in (first, second):
                c.execute(
                    "INSERT INTO waiters(txn_id, resource, mode, since) VALUES (?, 'db', 'X', 0)",
                    (txn,),
                )
        for txn in (first, second):
            assert ldb.grants.still_blocked(txn, [("db", "X")], frozenset()) == []
        with pytest.raises(Victim):  # the full attempt breaks it: the younger goes
            ldb.grants.try_acquire(second, [("db", "X")], queue=True)
    finally:
        ldb.close()
