"""A transaction that a conflict rolled back mid-way stays failed until the application ends
it: the statements after the error must not start a new transaction that ``commit()`` would
commit without the work before the error (a partial commit of what the application wrote as
one transaction)."""

from __future__ import annotations

import contextlib
import threading

import pytest
from conftest import stock_apsw, wait_until
from workers import wait_until_visible

import sqlite_concurrent

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")


def _rows(path: str) -> list[tuple]:
    conn = stock_apsw(path)
    try:
        return conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        conn.close()


def _waiters(path: str) -> int:
    locks = stock_apsw(path + "-locks")
    try:
        return locks.execute("SELECT count(*) FROM waiters").fetchone()[0]
    finally:
        locks.close()


def _conflicted(path: str, isolation_level: str | None = "") -> sqlite_concurrent.Connection:
    """A connection whose transaction inserted row 5, then lost row 1 to a committed writer
    while waiting for its lock: the statement raised ConflictError, the transaction is gone."""
    setup = sqlite_concurrent.connect(path)
    setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    setup.execute("INSERT INTO t VALUES (1, 0)")
    setup.commit()
    setup.close()
    holder = sqlite_concurrent.connect(path, timeout=30, check_same_thread=False)
    loser = sqlite_concurrent.connect(
        path, timeout=30, check_same_thread=False, isolation_level=isolation_level
    )
    holder.execute("UPDATE t SET v = 1 WHERE id = 1")
    wait_until_visible(path, "row:t:1")
    if isolation_level is None:
        loser.execute("BEGIN")
    loser.execute("INSERT INTO t VALUES (5, 5)")
    outcome: list = []

    def update_row_1():
        try:
            loser.execute("UPDATE t SET v = 2 WHERE id = 1")
            outcome.append("ran")
        except sqlite_concurrent.ConflictError as e:
            outcome.append(e)

    thread = threading.Thread(target=update_row_1)
    thread.start()
    wait_until(lambda: _waiters(path) > 0, "the loser waits for row 1")
    holder.commit()
    holder.close()
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], sqlite_concurrent.ConflictError)
    assert (outcome[0].table, outcome[0].key) == ("t", (1,))
    return loser


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation_level", ["", None], ids=["implicit", "explicit-begin"])
def test_statements_after_the_conflict_fail_and_commit_commits_nothing(db_path, isolation_level):
    conn = _conflicted(db_path, isolation_level)
    assert conn.in_transaction  # as the stdlib's after a failed statement: still to be ended
    with pytest.raises(sqlite_concurrent.ConflictError) as after:
        conn.execute("INSERT INTO t VALUES (6, 6)")
    assert (after.value.table, after.value.key) == ("t", (1,))
    assert "rolled back" in str(after.value)
    with pytest.raises(sqlite_concurrent.ConflictError):
        conn.execute("SELECT * FROM t")
    with pytest.raises(sqlite_concurrent.ConflictError, match="nothing was committed"):
        if isolation_level is None:
            conn.execute("COMMIT")
        else:
            conn.commit()
    assert not conn.in_transaction
    assert _rows(db_path) == [(1, 1)]
    # Ended, the connection works as before.
    conn.execute("INSERT INTO t VALUES (7, 7)")
    conn.commit()
    assert _rows(db_path) == [(1, 1), (7, 7)]
    conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["rollback()", "ROLLBACK"])
def test_rollback_ends_it_quietly(db_path, how):
    conn = _conflicted(db_path, None if how == "ROLLBACK" else "")
    if how == "ROLLBACK":
        conn.execute("ROLLBACK")
    else:
        conn.rollback()
    assert not conn.in_transaction
    conn.execute("INSERT INTO t VALUES (6, 6)")  # autocommit or a new transaction
    conn.commit()
    assert _rows(db_path) == [(1, 1), (6, 6)]
    conn.close()


@pytest.mark.timeout(60)
def test_a_with_block_that_swallows_the_conflict_raises_it_at_its_end(db_path):
    conn = _conflicted(db_path)
    # The application carries on after the error, as some do.
    with pytest.raises(sqlite_concurrent.ConflictError, match="nothing was committed"), conn:  # noqa: SIM117
        with contextlib.suppress(sqlite_concurrent.ConflictError):
            conn.execute("INSERT INTO t VALUES (6, 6)")
    assert not conn.in_transaction
    assert _rows(db_path) == [(1, 1)]
    conn.close()
