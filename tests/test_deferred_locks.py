"""Row locks written a moment after their statement (``row_lock_delay``), and transactions that
register in the lock database only with their first written lock."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest
from conftest import in_thread, lock_rows, stock_apsw, wait_until
from workers import wait_until_visible

import sqlite_concurrent
from sqlite_concurrent.locking import publisher

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("optimistic")]

NEVER = 60.0  # the longest delay allowed: within a test, the publisher never gets to it


@pytest.fixture
def db(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(1, 4)])
    conn.commit()
    conn.close()
    return db_path


def _lockdb_rows(path):
    return (
        lock_rows(path, "SELECT resource FROM locks ORDER BY resource"),
        lock_rows(path, "SELECT count(*) FROM transactions")[0][0],
    )


def test_a_transaction_that_commits_before_the_delay_never_touches_the_lock_database(db):
    conn = sqlite_concurrent.connect(db, row_lock_delay=NEVER)
    try:
        conn.execute("BEGIN")
        assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == (0,)
        conn.execute("UPDATE t SET v = 5 WHERE id = 1")
        conn.execute("UPDATE t SET v = 6 WHERE id = 2")
        # Open, with two rows written: still neither registered nor locked anywhere.
        assert _lockdb_rows(db) == ([], 0)
        conn.commit()
    finally:
        conn.close()
    assert _lockdb_rows(db) == ([], 0)
    check = stock_apsw(db)
    assert check.execute("SELECT v FROM t ORDER BY id").fetchall() == [(5,), (6,), (0,)]
    check.close()


def test_locks_are_written_after_the_delay_while_the_transaction_stays_open(db):
    conn = sqlite_concurrent.connect(db)  # the default delay
    try:
        conn.execute("BEGIN")
        conn.execute("UPDATE t SET v = 5 WHERE id = 1")
        conn.execute("UPDATE t SET v = 6 WHERE id = 3")
        wait_until_visible(db, "row:t:3")
        assert _lockdb_rows(db) == ([("row:t:1",), ("row:t:3",)], 1)
        conn.commit()
    finally:
        conn.close()
    assert _lockdb_rows(db) == ([], 0)  # released by the end, as a lock taken at once


def test_zero_delay_writes_locks_before_the_statement_returns(db):
    conn = sqlite_concurrent.connect(db, row_lock_delay=0)
    try:
        conn.execute("UPDATE t SET v = 5 WHERE id = 2")  # implicit BEGIN, stays open
        assert _lockdb_rows(db) == ([("row:t:2",)], 1)
        conn.rollback()
    finally:
        conn.close()
    assert _lockdb_rows(db) == ([], 0)


def test_unwritten_locks_still_lose_to_the_first_committer(db):
    """Neither sees the other's lock, so neither waits: the merge keeps snapshot isolation."""
    first = sqlite_concurrent.connect(db, row_lock_delay=NEVER)
    second = sqlite_concurrent.connect(db, row_lock_delay=NEVER)
    try:
        first.execute("UPDATE t SET v = 1 WHERE id = 1")
        second.execute("UPDATE t SET v = 2 WHERE id = 1")
        first.commit()
        with pytest.raises(sqlite_concurrent.ConflictError) as e:
            second.commit()
        assert (e.value.table, e.value.key, e.value.kind) == ("t", (1,), "data")
        assert not second.in_transaction
    finally:
        first.close()
        second.close()
    check = stock_apsw(db)
    assert check.execute("SELECT v FROM t WHERE id = 1").fetchone() == (1,)
    check.close()


def test_a_transaction_about_to_wait_writes_its_own_locks_first(db):
    """A deadlock needs both sides in the wait-for graph, unwritten locks included."""
    holder = sqlite_concurrent.connect(db, row_lock_delay=0, check_same_thread=False)
    waiter = sqlite_concurrent.connect(db, row_lock_delay=NEVER, check_same_thread=False)
    try:
        holder.execute("UPDATE t SET v = 1 WHERE id = 1")
        assert _lockdb_rows(db) == ([("row:t:1",)], 1)

        def cross():  # one thread: a thread never waits for its own transactions
            waiter.execute("UPDATE t SET v = 2 WHERE id = 2")  # deferred for the whole test
            # Meets the holder's lock: before queueing, it writes its own row 2 lock.
            waiter.execute("UPDATE t SET v = 2 WHERE id = 1")

        thread, done, outcome = in_thread(cross)
        locks = stock_apsw(db + "-locks")
        wait_until(
            lambda: locks.execute("SELECT count(*) FROM waiters").fetchone()[0] == 1,
            "the waiter queues",
        )
        assert _lockdb_rows(db) == ([("row:t:1",), ("row:t:2",)], 2)
        locks.close()
        # The holder now wants row 2: a cycle, and the waiter (the younger) is the victim.
        holder.execute("UPDATE t SET v = 1 WHERE id = 2")
        assert done.wait(30)
        thread.join()
        assert outcome[0][0] == "error"
        assert isinstance(outcome[0][1], sqlite_concurrent.DeadlockError)
        holder.commit()
    finally:
        holder.close()
        waiter.close()
    check = stock_apsw(db)
    rows = check.execute("SELECT v FROM t WHERE id IN (1, 2) ORDER BY id").fetchall()
    assert rows == [(1,), (1,)]
    check.close()
    assert _lockdb_rows(db) == ([], 0)


@pytest.mark.parametrize("bad", [-1, 61, "2ms", None])
def test_bad_row_lock_delay_is_refused(db, bad):
    with pytest.raises(sqlite_concurrent.ProgrammingError, match="row_lock_delay"):
        sqlite_concurrent.connect(db, row_lock_delay=bad)


def test_the_publisher_thread_ends_with_the_last_connection(db):
    conn = sqlite_concurrent.connect(db)
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = 9 WHERE id = 1")
    wait_until_visible(db, "row:t:1")

    def publishers():
        name = f"sqlite_concurrent-locks {db}"
        return [t for t in threading.enumerate() if t.name == name]

    assert len(publishers()) == 1
    conn.commit()
    conn.close()
    wait_until(lambda: not publishers(), "the publisher thread ends")


def _descriptors_on(path):
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}") == path
    return count


class _Item:
    """Queued work as a transaction leaves it: ``writes`` if it is still open, else not."""

    def __init__(self, writes):
        self.writes = writes
        self.published = threading.Event()

    def publish(self, lockdb):
        if self.writes:
            lockdb()
        self.published.set()


def test_the_publisher_opens_the_lock_database_only_to_write(db):
    """Opening a lock-database connection takes its write guard, so the publisher opens one
    only for locks it writes, not for transactions that ended before their locks were due:
    a process stopped while its publisher held the guard blocked every other writer."""
    locks = os.path.realpath(db + "-locks")
    pub = publisher.Publisher(db)
    before = _descriptors_on(locks)
    try:
        ended = _Item(writes=False)
        pub.schedule(ended, 0)
        assert ended.published.wait(30)
        assert _descriptors_on(locks) == before
        open_txn = _Item(writes=True)
        pub.schedule(open_txn, 0)
        assert open_txn.published.wait(30)
        assert _descriptors_on(locks) > before
    finally:
        pub.stop()
    assert pub.lockdb is None  # stopped: its thread has closed its connection
