"""Many writers appending to one table with auto-assigned ids (architecture.md, "Rowids nobody
saw")."""

from __future__ import annotations

import apsw
import pytest
from conftest import (
    hold_in_child,
    in_thread,
    integrity_ok,
    run_workers,
    stock_apsw,
    wait_until,
)
from workers import ingest

import sqlite_concurrent

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")

WRITERS = 8
ROWS = 150


def _events(path: str, extra: str = "") -> None:
    conn = sqlite_concurrent.connect(path)
    conn.execute(
        "CREATE TABLE events(id INTEGER PRIMARY KEY, writer INTEGER, seq INTEGER, "
        f"UNIQUE(writer, seq)){extra}"
    )
    conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("think", "autocommit"), [(0.0, False), (0.002, False), (0.0, True)])
def test_eight_writers_insert_auto_ids_without_conflicts(db_path, think, autocommit):
    _events(db_path)
    results = run_workers(
        ingest, [(db_path, w, ROWS, think, autocommit) for w in range(WRITERS)], timeout=170
    )
    assert sorted(r[0] for r in results) == list(range(WRITERS))
    assert sum(r[1] for r in results) == 0, "conflicts"
    conn = stock_apsw(db_path)
    rows = conn.execute("SELECT writer, seq FROM events ORDER BY writer, seq").fetchall()
    assert rows == [(w, s) for w in range(WRITERS) for s in range(ROWS)]
    ids = [i for (i,) in conn.execute("SELECT id FROM events")]
    assert len(set(ids)) == len(ids) == WRITERS * ROWS
    conn.close()
    assert integrity_ok(db_path)


def _pair(path):
    return sqlite_concurrent.connect(path), sqlite_concurrent.connect(path)


def _race(path, observe):
    """A inserts with an auto id and (maybe) observes it; B inserts and commits first, taking
    the same id; then A commits.  Returns (A's outcome, the ids of A's row)."""
    a, b = _pair(path)
    a.execute("BEGIN")
    a.execute("SELECT count(*) FROM events").fetchall()  # pin A's snapshot
    cur = a.execute("INSERT INTO events(writer, seq) VALUES (1, 1)")
    observe(a, cur)
    b.execute("INSERT INTO events(writer, seq) VALUES (2, 1)")
    b.commit()
    try:
        a.commit()
        outcome = "committed"
    except sqlite_concurrent.ConflictError as e:
        outcome = (e.kind, e.table, e.key)
    ids = stock_apsw(path).execute("SELECT writer, id FROM events ORDER BY writer").fetchall()
    a.close()
    b.close()
    return outcome, ids


@pytest.mark.timeout(60)
def test_unobserved_auto_id_is_rebased_to_a_fresh_one(db_path):
    _events(db_path)
    outcome, ids = _race(db_path, lambda conn, cur: None)
    assert outcome == "committed"
    assert ids == [(1, 2), (2, 1)]


OBSERVERS = {
    "lastrowid": lambda conn, cur: cur.lastrowid,
    "last_insert_rowid": lambda conn, cur: conn.execute("SELECT last_insert_rowid()").fetchone(),
    "later_read": lambda conn, cur: conn.execute("SELECT max(id) FROM events").fetchone(),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("channel", sorted(OBSERVERS))
def test_observed_auto_id_keeps_its_id_and_conflicts(db_path, channel):
    _events(db_path)
    outcome, ids = _race(db_path, OBSERVERS[channel])
    assert outcome == ("conflict", "events", (1,))
    assert ids == [(2, 1)]


@pytest.mark.timeout(60)
def test_returning_observes_the_id(db_path):
    _events(db_path)
    a, b = _pair(db_path)
    a.execute("BEGIN")
    a.execute("SELECT 1 FROM events").fetchall()
    (new_id,) = a.execute("INSERT INTO events(writer, seq) VALUES (1, 1) RETURNING id").fetchone()
    b.execute("INSERT INTO events(writer, seq) VALUES (2, 1)")
    b.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as info:
        a.commit()
    assert (new_id, info.value.kind, info.value.key) == (1, "conflict", (1,))
    a.close()
    b.close()


@pytest.mark.timeout(60)
def test_table_with_a_trigger_is_never_rebased(db_path):
    _events(db_path)
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("CREATE TABLE audit(event_id INTEGER)")
    setup.execute(
        "CREATE TRIGGER log_event AFTER INSERT ON events BEGIN "
        "INSERT INTO audit VALUES (NEW.id); END"
    )
    setup.close()
    outcome, _ = _race(db_path, lambda conn, cur: None)
    assert outcome == ("conflict", "events", (1,))
    assert stock_apsw(db_path).execute("SELECT event_id FROM audit").fetchall() == [(1,)]


@pytest.mark.timeout(60)
def test_child_row_referencing_a_fresh_parent_keeps_both_consistent(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute(
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id))"
    )
    conn.close()
    a, b = _pair(db_path)
    a.execute("PRAGMA foreign_keys=ON")
    a.execute("BEGIN")
    a.execute("SELECT 1 FROM parent").fetchall()
    pid = a.execute("INSERT INTO parent(name) VALUES ('a')").lastrowid
    a.execute("INSERT INTO child(parent_id) VALUES (?)", (pid,))
    b.execute("INSERT INTO parent(name) VALUES ('b')")
    b.commit()
    with pytest.raises(sqlite_concurrent.ConflictError):
        a.commit()  # its observed parent id was taken: the child must not point at b's row
    a.execute("BEGIN")
    a.execute("SELECT 1 FROM parent").fetchall()
    pid = a.execute("INSERT INTO parent(name) VALUES ('a')").lastrowid
    a.execute("INSERT INTO child(parent_id) VALUES (?)", (pid,))
    a.commit()
    check = stock_apsw(db_path)
    assert check.execute(
        "SELECT p.name FROM child c JOIN parent p ON p.id = c.parent_id"
    ).fetchall() == [("a",)]
    check.close()
    a.close()
    b.close()


@pytest.mark.timeout(60)
def test_foreign_key_from_a_written_row_observes_the_parent(db_path):
    """Even without lastrowid: a child row written in the transaction that references the
    parent table pins the parent's auto ids (the child may hold them)."""
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute(
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id))"
    )
    conn.close()
    a, b = _pair(db_path)
    a.execute("BEGIN")
    a.execute("SELECT 1 FROM child").fetchall()
    a.execute("INSERT INTO parent(name) VALUES ('a')")
    a.execute("INSERT INTO child(parent_id) VALUES (1)")
    b.execute("INSERT INTO parent(name) VALUES ('b')")
    b.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as info:
        a.commit()
    assert (info.value.table, info.value.kind) == ("parent", "conflict")
    a.close()
    b.close()


@pytest.mark.timeout(60)
def test_batch_of_unobserved_inserts_keeps_its_order(db_path):
    _events(db_path)
    a, b = _pair(db_path)
    a.execute("BEGIN")
    a.execute("SELECT 1 FROM events").fetchall()
    a.executemany("INSERT INTO events(writer, seq) VALUES (1, ?)", [(s,) for s in range(5)])
    b.executemany("INSERT INTO events(writer, seq) VALUES (2, ?)", [(s,) for s in range(3)])
    b.commit()
    a.commit()
    rows = stock_apsw(db_path).execute("SELECT writer, seq FROM events ORDER BY id").fetchall()
    assert rows == [(2, 0), (2, 1), (2, 2)] + [(1, s) for s in range(5)]
    a.close()
    b.close()


@pytest.mark.timeout(60)
def test_autoincrement_rebased_id_is_above_everything_in_the_snapshot(db_path):
    _events(db_path, "")
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE seqd(id INTEGER PRIMARY KEY AUTOINCREMENT, v)")
    conn.execute("INSERT INTO seqd(v) VALUES ('old')")
    conn.execute("DELETE FROM seqd")
    conn.commit()
    conn.close()
    a, b = _pair(db_path)
    a.execute("BEGIN")
    a.execute("SELECT 1 FROM events").fetchall()
    a.execute("INSERT INTO seqd(v) VALUES ('a')")
    b.execute("INSERT INTO seqd(v) VALUES ('b')")
    b.commit()
    a.commit()
    rows = stock_apsw(db_path).execute("SELECT v, id FROM seqd ORDER BY id").fetchall()
    assert rows == [("b", 2), ("a", 3)]
    a.close()
    b.close()


@pytest.mark.timeout(60)
def test_autocommit_statement_takes_the_fast_path(db_path):
    """The statement itself runs on the database, between the merge's BEGIN IMMEDIATE and
    COMMIT (a merged transaction would send its changes as rebuilt statements instead), and
    leaves no transaction in the lock database and no commit marker."""
    _events(db_path)
    conn = sqlite_concurrent.connect(db_path, isolation_level=None)
    heard: list[str] = []
    # What reaches the database file: SQLite's own trace of the connection that merges.
    conn._merger.trace_v2(apsw.SQLITE_TRACE_STMT, lambda event: heard.append(event["sql"]))
    sql = "INSERT INTO events(writer, seq) VALUES (1, 1)"
    cur = conn.execute(sql)
    assert cur.rowcount == 1 and cur.lastrowid == 1 and not conn.in_transaction
    assert heard == ["BEGIN IMMEDIATE", sql, "COMMIT"]
    assert stock_apsw(db_path + "-locks").execute(
        "SELECT count(*) FROM transactions"
    ).fetchone() == (0,)
    assert stock_apsw(db_path).execute(
        "SELECT count(*) FROM sqlite_schema WHERE name = '_sqlite_concurrent_commits'"
    ).fetchone() == (0,)
    conn.close()


@pytest.mark.timeout(60)
def test_fast_path_respects_a_row_lock_of_a_live_transaction(db_path):
    """A row locked by a live transaction sends the autocommit statement down the normal
    path; here in the same thread, where it does not wait, so first committer wins."""
    _events(db_path)
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("INSERT INTO events(id, writer, seq) VALUES (1, 0, 0)")
    setup.commit()
    setup.close()
    holder = sqlite_concurrent.connect(db_path)
    holder.execute("UPDATE events SET seq = 10 WHERE id = 1")
    auto = sqlite_concurrent.connect(db_path, isolation_level=None)
    auto.execute("UPDATE events SET seq = 20 WHERE id = 1")  # normal path, commits first
    with pytest.raises(sqlite_concurrent.ConflictError):
        holder.commit()
    assert stock_apsw(db_path).execute("SELECT seq FROM events").fetchone() == (20,)
    holder.close()
    auto.close()


@pytest.mark.timeout(90)
def test_fast_path_sees_a_lock_taken_since_it_last_looked(db_path):
    """The fast path remembers that the lock database was quiet and trusts that while its
    WAL-index header stays the same.  A transaction that begins later in another process
    changes it: the autocommit UPDATE must then queue for that transaction's row lock, not
    commit past it."""
    _events(db_path)
    auto = sqlite_concurrent.connect(db_path, isolation_level=None, check_same_thread=False)
    auto.execute("INSERT INTO events(id, writer, seq) VALUES (1, 0, 0)")  # fast path, quiet
    auto.execute("INSERT INTO events(id, writer, seq) VALUES (2, 0, 1)")  # the quiet reused
    proc, queue, proceed = hold_in_child(db_path, ["UPDATE events SET seq = 10 WHERE id = 1"])
    locks = stock_apsw(db_path + "-locks")
    try:
        thread, done, outcome = in_thread(
            lambda: auto.execute("UPDATE events SET seq = 20 WHERE id = 1")
        )
        wait_until(
            lambda: locks.execute(
                "SELECT count(*) FROM waiters WHERE resource = 'row:events:1'"
            ).fetchone()[0],
            "the autocommit UPDATE queues for the row lock",
            timeout=30,
        )
        assert not done.is_set()
        proceed.set()
        assert queue.get(timeout=60) == "committed"  # the holder was not overtaken
        assert done.wait(60)
        thread.join()
    finally:
        proceed.set()
        proc.join(60)
        locks.close()
    # The waiting statement's snapshot predates the holder's commit: it conflicts.
    (kind, result) = outcome[0]
    assert kind == "error" and isinstance(result, sqlite_concurrent.ConflictError), outcome
    assert stock_apsw(db_path).execute("SELECT seq FROM events WHERE id = 1").fetchone() == (10,)
    auto.close()
