"""Exclusive operations (architecture.md, "Exclusive operations"): DDL, VACUUM, ANALYZE, REINDEX and
header pragmas wait for the transactions other processes have open instead of breaking them, hold
new ones back until they are done, and run inside a transaction when the application opened one.  A
transaction whose snapshot predates a schema change made behind our back gets a retryable
conflict."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import (
    hold_in_child,
    in_thread,
    integrity_ok,
    lock_rows,
    stock_apsw,
    wait_until,
)
from workers import wait_until_visible

import sqlite_concurrent
from sqlite_concurrent import ConflictError

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("optimistic")]


@pytest.fixture
def db(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.executescript(
        """
        CREATE TABLE t(id INTEGER PRIMARY KEY, n INT);
        INSERT INTO t VALUES (1, 10), (2, 20);
        CREATE TABLE big(x);
        WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 200)
        INSERT INTO big SELECT zeroblob(1000) FROM k;
        DROP TABLE big;
        """
    )
    conn.close()
    return db_path


def _queued(path: str, mode: str) -> bool:
    locks = stock_apsw(path + "-locks")
    try:
        return bool(
            locks.execute(
                "SELECT count(*) FROM waiters WHERE resource = 'db' AND mode = ?", (mode,)
            ).fetchone()[0]
        )
    finally:
        locks.close()


def _value(path: str, sql: str):
    conn = stock_apsw(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


SCHEMA = "SELECT type, name FROM sqlite_schema ORDER BY name"

# (statement, query whose result the statement changes)
OPERATIONS = [
    ("CREATE TABLE u(x)", SCHEMA),
    ("CREATE INDEX t_n ON t(n)", SCHEMA),
    ("DROP TABLE t", SCHEMA),
    ("ALTER TABLE t ADD COLUMN extra DEFAULT 'e'", "SELECT * FROM t ORDER BY id"),
    ("ALTER TABLE t RENAME TO t2", SCHEMA),
    ("CREATE VIEW v AS SELECT n FROM t", SCHEMA),
    ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", SCHEMA),
    ("VACUUM", "PRAGMA freelist_count"),
    ("ANALYZE", SCHEMA),  # creates sqlite_stat1
    ("PRAGMA user_version = 5", "PRAGMA user_version"),
    ("PRAGMA application_id = 77", "PRAGMA application_id"),
]


@pytest.mark.parametrize("sql,probe", OPERATIONS, ids=[op[0].split("(")[0] for op in OPERATIONS])
def test_exclusive_operation_waits_for_a_transaction_open_in_another_process(db, sql, probe):
    before = _value(db, probe)
    proc, queue, proceed = hold_in_child(db, ["UPDATE t SET n = n + 1 WHERE id = 2"])
    conn = sqlite_concurrent.connect(db, check_same_thread=False)
    try:
        thread, done, outcome = in_thread(lambda: conn.execute(sql))
        wait_until(lambda: _queued(db, "X"), "the operation queues for the db lock")
        # Queued behind the open transaction: not run, and the transaction is not broken.
        assert not done.is_set()
        assert _value(db, probe) == before
        proceed.set()
        assert queue.get(timeout=60) == "committed"
        proc.join(60)
        assert proc.exitcode == 0
        assert done.wait(60)
        thread.join()
        assert outcome[0][0] == "ok", outcome
        assert not conn.in_transaction
    finally:
        conn.close()
    assert _value(db, probe) != before
    if "t" in {name for _, name in _value(db, SCHEMA)}:
        assert _value(db, "SELECT n FROM t WHERE id = 2") == [(21,)]  # the holder's commit
    assert integrity_ok(db)


def test_reindex_waits_for_a_transaction_open_in_another_process(db):
    """REINDEX changes nothing visible, so the wait itself is what is checked."""
    conn = sqlite_concurrent.connect(db, check_same_thread=False)
    try:
        (status, error), _ = _meets_ddl_after(
            db, conn, [], "REINDEX", "UPDATE t SET n = n + 1 WHERE id = 2"
        )
        assert status == "ok", error
    finally:
        conn.close()
    assert _value(db, "SELECT n FROM t WHERE id = 2") == [(21,)]


def test_new_transactions_wait_behind_a_queued_exclusive_operation(db):
    """First come, first served: a transaction that begins while an ALTER TABLE waits runs
    after it, so it can use the new column; the autocommit fast path queues the same way."""
    proc, queue, proceed = hold_in_child(db, ["UPDATE t SET n = n + 1 WHERE id = 2"])
    alter = sqlite_concurrent.connect(db, check_same_thread=False)
    later = sqlite_concurrent.connect(db, check_same_thread=False, isolation_level=None)
    try:
        t1, done1, out1 = in_thread(lambda: alter.execute("ALTER TABLE t ADD COLUMN extra"))
        wait_until(lambda: _queued(db, "X"), "the ALTER TABLE queues")
        t2, done2, out2 = in_thread(
            lambda: later.execute("UPDATE t SET extra = 'after' WHERE id = 1").rowcount
        )
        wait_until(lambda: _queued(db, "S"), "the later statement queues behind it")
        assert not done1.is_set() and not done2.is_set()
        proceed.set()
        assert queue.get(timeout=60) == "committed"
        proc.join(60)
        assert done1.wait(60) and done2.wait(60)
        t1.join()
        t2.join()
        assert out1[0][0] == "ok", out1
        assert out2 == [("ok", 1)], out2
    finally:
        alter.close()
        later.close()
    assert _value(db, "SELECT id, n, extra FROM t ORDER BY id") == [(1, 10, "after"), (2, 21, None)]


def _run(conn, sql: str):
    """Run ``sql``, fetching its rows if it is a query; fetching what another statement
    returns would show the transaction to the application (``replaying.py``)."""
    cursor = conn.execute(sql)
    return cursor.fetchall() if sql.startswith("SELECT") else None


def _runs_optimistically(conn, *statements: str) -> None:
    """Teach ``conn`` (mode ``auto``) that transactions running ``statements`` wait in their
    body: they run optimistically from then on (``engine/ways.py``), also past their first
    write."""
    for _ in range(10):
        with conn:
            for sql in statements:
                _run(conn, sql)
            time.sleep(0.003)  # waiting, as a body doing I/O does
        if conn.ways["optimistic"]:
            return
    raise AssertionError(f"still not optimistic: {dict(+conn.ways)}")


def _meets_ddl_after(db, conn, earlier: list[str], ddl: str, other: str):
    """Run ``earlier`` on ``conn`` (in a transaction, if they write), then ``ddl``, which waits
    for another process's open transaction running ``other``; that one commits once ``ddl``
    has queued.
    Returns what ``ddl`` came to (``in_thread``'s outcome) and what the queries among
    ``earlier`` fetched."""
    proc, queue, proceed = hold_in_child(db, [other], mode="optimistic")
    fetched = [_run(conn, sql) for sql in earlier]
    thread, done, outcome = in_thread(lambda: conn.execute(ddl))
    wait_until(lambda: _queued(db, "X"), "the DDL queues")
    assert not done.is_set()
    proceed.set()
    assert queue.get(timeout=60) == "committed"
    proc.join(60)
    assert done.wait(60)
    thread.join()
    return outcome[0], fetched


def test_transaction_that_meets_ddl_waits_then_commits_everything_at_once(db):
    """Its earlier statements read the page the other process changed, and nothing of them
    was seen: they run again on the latest database, and it goes on there."""
    conn = sqlite_concurrent.connect(db, check_same_thread=False, mode="auto")
    try:
        _runs_optimistically(conn, "UPDATE t SET n = 11 WHERE id = 1")
        escalated = conn.ways["escalated"]
        conn.execute("UPDATE t SET n = 11 WHERE id = 1")
        (status, _), _ = _meets_ddl_after(
            db,
            conn,
            ["INSERT INTO t VALUES (3, 30)"],
            "CREATE INDEX t_n ON t(n)",
            "UPDATE t SET n = n + 1 WHERE id = 2",
        )
        assert status == "ok"
        assert conn.ways["escalated"] == escalated + 1  # run again, and on directly
        # The rest of the transaction sees its own earlier writes and the index.
        assert conn.in_transaction
        assert conn.execute("SELECT id, n FROM t ORDER BY id").fetchall() == [
            (1, 11),
            (2, 21),
            (3, 30),
        ]
        conn.execute("INSERT INTO t VALUES (4, 40)")
        # Nothing is visible to others before the commit.
        assert _value(db, "SELECT count(*) FROM t") == [(2,)]
        assert ("index", "t_n") not in _value(db, SCHEMA)
        conn.commit()
    finally:
        conn.close()
    assert _value(db, "SELECT id, n FROM t ORDER BY id") == [(1, 11), (2, 21), (3, 30), (4, 40)]
    assert ("index", "t_n") in _value(db, SCHEMA)
    assert integrity_ok(db)


def test_transaction_that_meets_ddl_after_reading_what_changed_conflicts(db):
    """It saw row 2 as 20; the other process made it 21 before the DDL could run.  Going on
    from the latest database would show it 21 in the same transaction: a conflict instead,
    and the transaction stays aborted until the application ends it."""
    conn = sqlite_concurrent.connect(db, check_same_thread=False, mode="auto")
    try:
        _runs_optimistically(
            conn, "BEGIN", "SELECT n FROM t WHERE id = 2", "UPDATE t SET n = n WHERE id = 1"
        )
        conn.execute("BEGIN")
        (status, error), fetched = _meets_ddl_after(
            db,
            conn,
            ["SELECT n FROM t WHERE id = 2", "INSERT INTO t VALUES (3, 30)"],
            "CREATE INDEX t_n ON t(n)",
            "UPDATE t SET n = n + 1 WHERE id = 2",
        )
        assert fetched[0] == [(20,)]
        assert status == "error" and isinstance(error, ConflictError), error
        assert error.kind == "page" and error.retryable
        assert conn.in_transaction
        with pytest.raises(ConflictError):
            conn.execute("SELECT n FROM t WHERE id = 2")
        conn.rollback()
    finally:
        conn.close()
    assert _value(db, "SELECT id, n FROM t ORDER BY id") == [(1, 10), (2, 21)]
    assert ("index", "t_n") not in _value(db, SCHEMA)


def test_transaction_that_meets_ddl_conflicts_on_a_changed_page_it_read_when_optimistic(db):
    """In ``optimistic`` mode nothing runs again: the page its UPDATE read changed, so the
    transaction is aborted, and nothing of it is applied."""
    conn = sqlite_concurrent.connect(db, check_same_thread=False)
    try:
        conn.execute("UPDATE t SET n = 11 WHERE id = 1")
        (status, error), _ = _meets_ddl_after(
            db, conn, [], "CREATE INDEX t_n ON t(n)", "UPDATE t SET n = n + 1 WHERE id = 2"
        )
        assert status == "error" and isinstance(error, ConflictError), error
        assert conn.in_transaction
        conn.rollback()
    finally:
        conn.close()
    assert _value(db, "SELECT id, n FROM t ORDER BY id") == [(1, 10), (2, 21)]


def test_transaction_that_meets_ddl_goes_on_when_the_other_changed_nothing_it_read(db):
    setup = sqlite_concurrent.connect(db)
    setup.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, n INT)")
    setup.execute("INSERT INTO u VALUES (1, 0)")
    setup.commit()
    setup.close()
    conn = sqlite_concurrent.connect(db, check_same_thread=False)
    try:
        conn.execute("UPDATE t SET n = 11 WHERE id = 1")
        (status, error), _ = _meets_ddl_after(
            db, conn, [], "CREATE INDEX t_n ON t(n)", "UPDATE u SET n = 1 WHERE id = 1"
        )
        assert status == "ok", error
        assert conn.execute("SELECT n FROM u").fetchall() == [(1,)]
        conn.commit()
    finally:
        conn.close()
    assert _value(db, "SELECT id, n FROM t ORDER BY id") == [(1, 11), (2, 20)]
    assert ("index", "t_n") in _value(db, SCHEMA)


def test_exclusive_transaction_rolls_back_as_a_whole(db):
    conn = sqlite_concurrent.connect(db)
    conn.execute("UPDATE t SET n = 11 WHERE id = 1")
    conn.execute("CREATE TABLE u(x)")
    conn.execute("INSERT INTO u VALUES (1)")
    conn.execute("PRAGMA user_version = 9")
    conn.rollback()
    assert not conn.in_transaction
    # The connection goes on normally afterwards.
    conn.execute("UPDATE t SET n = 12 WHERE id = 1")
    conn.commit()
    conn.close()
    assert _value(db, "SELECT n FROM t WHERE id = 1") == [(12,)]
    assert "u" not in {name for _, name in _value(db, SCHEMA)}
    assert _value(db, "PRAGMA user_version") == [(0,)]


def test_earlier_write_that_went_stale_conflicts_when_the_transaction_turns_exclusive(db):
    """Its earlier writes are checked as at a merge: a row changed since its snapshot (here by
    a stock writer, which our row locks cannot stop) is a retryable conflict, and nothing of
    the transaction is applied; it stays open, failing, until the application ends it."""
    conn = sqlite_concurrent.connect(db)
    conn.execute("UPDATE t SET n = 11 WHERE id = 1")
    stock = stock_apsw(db)
    stock.execute("UPDATE t SET n = 99 WHERE id = 1")
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        conn.execute("CREATE TABLE u(x)")
    assert exc_info.value.retryable and exc_info.value.table == "t"
    assert conn.in_transaction
    conn.rollback()
    assert not conn.in_transaction
    stock.close()
    conn.close()
    assert _value(db, "SELECT n FROM t WHERE id = 1") == [(99,)]
    assert "u" not in {name for _, name in _value(db, SCHEMA)}


def test_ddl_times_out_rather_than_breaking_an_open_transaction(db):
    proc, queue, proceed = hold_in_child(db, ["UPDATE t SET n = n + 1 WHERE id = 2"])
    conn = sqlite_concurrent.connect(db, timeout=0.3)
    try:
        with pytest.raises(sqlite_concurrent.LockTimeoutError) as exc_info:
            conn.execute("CREATE TABLE u(x)")
        assert exc_info.value.resource == "db"
        assert not conn.in_transaction
        # Inside a transaction the timeout fails the statement only, as SQLite's own does.
        conn.execute("UPDATE t SET n = 11 WHERE id = 1")
        with pytest.raises(sqlite_concurrent.OperationalError):
            conn.execute("CREATE TABLE u(x)")
        assert conn.in_transaction
        proceed.set()
        assert queue.get(timeout=60) == "committed"
        proc.join(60)
        conn.commit()
    finally:
        conn.close()
    assert _value(db, "SELECT n FROM t ORDER BY id") == [(11,), (21,)]
    assert "u" not in {name for _, name in _value(db, SCHEMA)}


def test_two_transactions_turning_exclusive_deadlock_and_the_younger_rolls_back(db):
    first = sqlite_concurrent.connect(db, check_same_thread=False)
    second = sqlite_concurrent.connect(db, check_same_thread=False)
    both_wrote = threading.Barrier(2, timeout=60)

    def work(conn, row, table):
        conn.execute("UPDATE t SET n = n + 1 WHERE id = ?", (row,))
        # Each waits for the other only once the other is in the lock database, i.e. once its
        # row lock is written (a moment after the statement); before, the first to turn
        # exclusive would not wait, and the other's snapshot would simply be stale.
        wait_until_visible(db, f"row:t:{row}")
        both_wrote.wait()
        conn.execute(f"CREATE TABLE {table}(x)")
        conn.commit()

    try:
        t1, done1, out1 = in_thread(lambda: work(first, 1, "a"))
        t2, done2, out2 = in_thread(lambda: work(second, 2, "b"))
        assert done1.wait(60) and done2.wait(60)
        t1.join()
        t2.join()
    finally:
        first.close()
        second.close()
    outcomes = sorted([out1[0][0], out2[0][0]])
    assert outcomes == ["error", "ok"], (out1, out2)
    error = next(o[1] for o in (out1[0], out2[0]) if o[0] == "error")
    assert isinstance(error, sqlite_concurrent.DeadlockError) and error.retryable
    loser_table = "b" if out1[0][0] == "ok" else "a"
    names = {name for _, name in _value(db, SCHEMA)}
    assert loser_table not in names and ({"a", "b"} - {loser_table}) <= names
    winner_row = 1 if loser_table == "b" else 2
    assert _value(db, "SELECT id, n FROM t ORDER BY id") == [
        (1, 10 + (winner_row == 1)),
        (2, 20 + (winner_row == 2)),
    ]


def test_schema_change_after_the_merger_planned_the_old_schema_is_a_conflict(db):
    # The merge builds its statements before taking the merge lock, from what the merger knows
    # of the transaction's schema.  A schema change in between must still fail the merge
    # (checked under the lock), not apply statements planned for the old schema.
    conn = sqlite_concurrent.connect(db)
    for n in (11, 12):  # the merger now knows the schema (statements cached for it)
        with conn:
            conn.execute("UPDATE t SET n = ? WHERE id = 1", (n,))
    stock = stock_apsw(db)
    conn.execute("UPDATE t SET n = 13 WHERE id = 1")
    stock.execute("ALTER TABLE t RENAME COLUMN n TO m")
    stock.execute("ALTER TABLE t ADD COLUMN n DEFAULT 0")
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        conn.commit()
    assert exc_info.value.kind == "schema" and exc_info.value.retryable
    assert stock.execute("SELECT m, n FROM t WHERE id = 1").fetchall() == [(12, 0)]
    with conn:
        conn.execute("UPDATE t SET n = 5 WHERE id = 1")
    assert stock.execute("SELECT m, n FROM t WHERE id = 1").fetchall() == [(12, 5)]
    conn.close()


def test_snapshot_older_than_a_schema_change_by_a_stock_writer_is_a_retryable_conflict(db):
    conn = sqlite_concurrent.connect(db)
    conn.execute("UPDATE t SET n = 11 WHERE id = 1")
    stock = stock_apsw(db)
    stock.execute("ALTER TABLE t ADD COLUMN extra")
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        conn.commit()
    assert exc_info.value.kind == "schema" and exc_info.value.retryable
    assert stock.execute("SELECT n FROM t WHERE id = 1").fetchall() == [(10,)]

    attempts = []

    def bump(c):
        c.execute("UPDATE t SET n = n + 1 WHERE id = 1")
        if not attempts:
            stock.execute("ALTER TABLE t ADD COLUMN extra2")
        attempts.append(1)

    conn.transaction(bump, retries=3)
    assert len(attempts) == 2
    assert stock.execute("SELECT n FROM t WHERE id = 1").fetchall() == [(11,)]
    stock.close()
    conn.close()


def test_killed_exclusive_transaction_leaves_nothing_behind(db):
    """SIGKILL while a transaction holds the db lock and the merge lock, mid-way through a
    schema change: nothing of it is applied, and the next writer carries on."""
    proc, _queue, _proceed = hold_in_child(
        db, ["UPDATE t SET n = 0 WHERE id = 1", "CREATE TABLE u(x)", "INSERT INTO u VALUES (1)"]
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(60)
    conn = sqlite_concurrent.connect(db, timeout=10)
    conn.execute("UPDATE t SET n = n + 1 WHERE id = 1")
    conn.execute("CREATE TABLE w(x)")
    conn.commit()
    conn.close()
    assert _value(db, "SELECT n FROM t WHERE id = 1") == [(11,)]
    names = {name for _, name in _value(db, SCHEMA)}
    assert "u" not in names and "w" in names
    assert lock_rows(db, "SELECT count(*) FROM locks") == [(0,)]
    assert lock_rows(db, "SELECT count(*) FROM transactions") == [(0,)]
    assert integrity_ok(db)


def test_reindex_and_vacuum_inside_a_transaction(db):
    """REINDEX rewrites index pages without telling the authorizer: inside a transaction it
    turns the transaction exclusive.  VACUUM there is SQLite's own error, as in the stdlib."""
    conn = sqlite_concurrent.connect(db)
    conn.execute("CREATE INDEX t_n ON t(n)")
    conn.execute("UPDATE t SET n = 11 WHERE id = 1")
    with pytest.raises(sqlite_concurrent.OperationalError, match="VACUUM"):
        conn.execute("VACUUM")
    assert conn.in_transaction
    conn.execute("REINDEX t_n")
    conn.execute("REINDEX")
    conn.commit()
    conn.close()
    assert _value(db, "SELECT n FROM t ORDER BY id") == [(11,), (20,)]
    assert integrity_ok(db)


def test_a_transaction_whose_ddl_finds_its_writes_conflicting_stays_aborted_until_ended(db):
    """Moving onto the merger applies what it wrote so far; a row another transaction changed
    meanwhile is a conflict, and as for any statement's conflict, every statement raises it
    again until the application ends the transaction, which ROLLBACK then does."""
    conn = sqlite_concurrent.connect(db, isolation_level=None, mode="optimistic")
    other = sqlite_concurrent.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("UPDATE t SET n = 5 WHERE id = 1")
        other.execute("UPDATE t SET n = 6 WHERE id = 1")
        with pytest.raises(ConflictError):
            conn.execute("CREATE INDEX t_n ON t(n)")
        assert conn.in_transaction
        with pytest.raises(ConflictError):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert not conn.in_transaction
        assert conn.execute("SELECT n FROM t WHERE id = 1").fetchone() == (6,)
        assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 't_n'").fetchone() == (
            0,
        )
    finally:
        conn.close()
        other.close()
