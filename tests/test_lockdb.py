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


def _queue(ldb, txn, resource, mode):
    with ldb.writing() as c:
        c.execute(
            "INSERT INTO waiters(txn_id, resource, mode, since) VALUES (?, ?, ?, 0)",
            (txn, resource, mode),
        )


@pytest.mark.timeout(60)
def test_a_release_wakes_only_the_waiters_that_can_go_on(db_path):
    """After a release, one read decides whom to wake: the first in line for what was
    released (and the S requests queued right behind it), and deadlock victims; not those
    still blocked, who are woken by whatever blocks them when it ends."""
    sqlite_concurrent.connect(db_path).close()
    ldb = LockDB(db_path)
    try:
        holder, _ = ldb.begin("row")
        other, _ = ldb.begin("row")
        assert ldb.grants.try_acquire(holder, [("table:t", "X")], queue=True)[0] == []
        assert ldb.grants.try_acquire(other, [("table:u", "X")], queue=True)[0] == []
        first, second, third, fourth, row, elsewhere = (ldb.begin("row")[0] for _ in range(6))
        for txn, resource, mode in [
            (first, "table:t", "S"),
            (second, "table:t", "S"),
            (third, "table:t", "X"),
            (fourth, "table:t", "S"),  # behind an X request: waits for it
            (row, "row:t:7", "X"),  # under the table lock
            (elsewhere, "table:u", "S"),
        ]:
            blockers, _ = ldb.grants.try_acquire(txn, [(resource, mode)], queue=True)
            assert blockers
        waiting = [first, second, third, fourth, row, elsewhere]
        assert ldb.grants.due(waiting) == []
        with ldb.writing() as c:  # as a deadlock search picks a victim
            c.execute("UPDATE transactions SET state='deadlock' WHERE txn_id=?", (fourth,))
        assert ldb.grants.due(waiting) == [fourth]
        with ldb.writing() as c:
            c.execute("UPDATE transactions SET state='active' WHERE txn_id=?", (fourth,))
        ldb.end(holder)
        assert ldb.grants.due(waiting) == [first, second, row]
        for txn, resource, mode in [(first, "table:t", "S"), (second, "table:t", "S")]:
            assert ldb.grants.try_acquire(txn, [(resource, mode)], queue=True)[0] == []
        # The X request waits for both S holders; the row for any lock on its table.
        assert ldb.grants.due(waiting) == []
        ldb.end(first)
        ldb.end(second)
        assert ldb.grants.due(waiting) == [third, row]
        ldb.end(other)
        assert ldb.grants.due(waiting) == [third, row, elsewhere]
    finally:
        ldb.close()


@pytest.mark.timeout(60)
def test_who_may_go_on_agrees_with_each_waiters_own_blockers(db_path):
    """``due`` decides for every waiter in one query; each waiter's blockers (``_blockers``,
    what a waiter's own attempt goes by) must say the same, whatever the locks and queues."""
    import random

    from sqlite_concurrent.locking.grants import DEADLOCK_VICTIM

    sqlite_concurrent.connect(db_path).close()
    ldb = LockDB(db_path)
    rng = random.Random(7)
    resources = ["db", "table:t", "table:a:b", "row:t:1", "row:t:-2", "row:a:b:3", "row:t2:1"]
    try:
        for _ in range(60):
            with ldb.writing() as c:
                for table in ("locks", "waiters", "transactions"):
                    c.execute(f"DELETE FROM {table}")
            txns = [ldb.begin("row")[0] for _ in range(rng.randint(2, 7))]
            with ldb.writing() as c:
                for txn in txns:
                    for resource in rng.sample(resources, rng.randint(0, 2)):
                        mode = "X" if resource.startswith("row:") else rng.choice("SX")
                        c.execute(
                            "INSERT OR IGNORE INTO locks VALUES (?, ?, ?, 0)",
                            (resource, txn, mode),
                        )
                    if rng.random() < 0.6:
                        resource = rng.choice(resources)
                        mode = "X" if resource.startswith("row:") else rng.choice("SX")
                        c.execute(
                            "INSERT INTO waiters(txn_id, resource, mode, since) "
                            "VALUES (?, ?, ?, 0)",
                            (txn, resource, mode),
                        )
                    if rng.random() < 0.1:
                        c.execute(
                            "UPDATE transactions SET state=? WHERE txn_id=?",
                            (DEADLOCK_VICTIM, txn),
                        )
                expected = set()
                for waiter, resource, mode, seq, state in c.execute(
                    "SELECT w.txn_id, w.resource, w.mode, w.seq, t.state "
                    "FROM waiters w JOIN transactions t USING (txn_id)"
                ).fetchall():
                    blocked = ldb.grants._blockers(c, waiter, resource, mode, seq)
                    if not blocked or state == DEADLOCK_VICTIM:
                        expected.add(waiter)
            assert set(ldb.grants.due(txns)) == expected
    finally:
        ldb.close()


@pytest.mark.timeout(60)
def test_queueing_breaks_every_cycle_it_closes(db_path):
    """A release wakes only waiters that can go on, so no wait-for cycle may be left in
    place: the victim picked for one cycle need not be in another.  Here ``middle`` waits for
    ``db`` in S mode between ``first`` and ``last``, which want it in X mode (each live
    transaction keeps a ``db`` X request waiting): ``last`` closes both ``last -> middle ->
    first -> last`` and ``last -> first -> last``.  Picking ``middle`` (the youngest of the
    first) leaves the second, whose members would wait out their timeouts."""
    from sqlite_concurrent.locking.grants import DEADLOCK_VICTIM, _find_cycle

    sqlite_concurrent.connect(db_path).close()
    ldb = LockDB(db_path)
    try:
        # Ids in this order make the search from ``last`` go through ``middle`` first.
        middle, first, last = (ldb.begin("row")[0] for _ in range(3))
        with ldb.writing() as c:  # began: first, then last, then middle
            for txn, began in ((first, 1.0), (last, 2.0), (middle, 3.0)):
                c.execute("UPDATE transactions SET began_at=? WHERE txn_id=?", (began, txn))
        for txn, mode in ((first, "X"), (middle, "S")):
            blockers, _ = ldb.grants.try_acquire(txn, [("db", mode)], queue=True)
            assert blockers
        # ``middle`` is the victim of the first cycle found; the second, ``last -> first ->
        # last``, has ``last`` as its youngest, whose leaving breaks both: it alone goes.
        with pytest.raises(Victim):
            ldb.grants.try_acquire(last, [("db", "X")], queue=True)
        with ldb.writing() as c:
            states = dict(c.execute("SELECT txn_id, state FROM transactions"))
            graph = ldb.grants._wait_for_graph(c)
        assert DEADLOCK_VICTIM not in states.values()
        assert not any(_find_cycle(graph, t) for t in graph)
        assert ldb.grants.due([first, middle]) == []  # ``last`` is live until it rolls back
        ldb.end(last)
        assert ldb.grants.due([first, middle]) == [first]

        # The same, with ``last`` the oldest: each cycle loses its own youngest, and ``last``
        # waits on, in no cycle.
        with ldb.writing() as c:
            for table in ("locks", "waiters", "transactions"):
                c.execute(f"DELETE FROM {table}")
        middle, first, last = (ldb.begin("row")[0] for _ in range(3))
        with ldb.writing() as c:
            for txn, began in ((last, 0.5), (first, 1.0), (middle, 3.0)):
                c.execute("UPDATE transactions SET began_at=? WHERE txn_id=?", (began, txn))
        for txn, mode in ((first, "X"), (middle, "S")):
            assert ldb.grants.try_acquire(txn, [("db", mode)], queue=True)[0]
        blockers, wake = ldb.grants.try_acquire(last, [("db", "X")], queue=True)
        assert blockers
        assert set(wake) == {middle, first}
        with ldb.writing() as c:
            states = dict(c.execute("SELECT txn_id, state FROM transactions"))
        assert states == {last: "active", first: DEADLOCK_VICTIM, middle: DEADLOCK_VICTIM}
        assert sorted(ldb.grants.due([first, middle, last])) == sorted([first, middle])
    finally:
        ldb.close()
