"""A transaction whose merge conflicts, and whose results the application never saw, is run
again on the latest database instead of failing (rerun.py).

Each test lets a transaction of ours run optimistically, commits a conflicting change from
another connection, then commits ours; and compares with the stdlib running the same
statements one transaction after the other, which is what running again must amount to.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from conftest import in_thread, lock_rows, wait_until

import sqlite_concurrent
from sqlite_concurrent import ConflictError

SCHEMA = """
    CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
    INSERT INTO c VALUES (1, 0), (2, 0);
    CREATE TABLE items (id INTEGER PRIMARY KEY, c_id INTEGER NOT NULL, note TEXT);
    CREATE TABLE u (k TEXT PRIMARY KEY);
    -- Its changes count in total_changes, run again or not.
    CREATE TABLE notes (note TEXT);
    CREATE TRIGGER noted AFTER INSERT ON items BEGIN INSERT INTO notes VALUES (new.note); END;
"""
FIRST = "UPDATE c SET n = n + ? WHERE id = ?"  # the first statement of every transaction here


def _setup(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    conn.close()


def _optimistic(
    db_path: str, first: str = FIRST, harmless: tuple = (0, 1), **kwargs
) -> sqlite_concurrent.Connection:
    """A connection whose transactions starting with ``first`` run optimistically: their
    bodies were long (run with ``harmless`` parameters, they change nothing)."""
    conn = sqlite_concurrent.connect(db_path, **kwargs)
    # Eight bodies that wait 3 ms: the shape's moving average of waits (clipped at 2 ms) ends
    # near 1.8 ms, well past the 1 ms where it turns optimistic, so that a loaded machine's
    # shorter measurement of the next body cannot turn it back.
    for _ in range(8):
        with conn:
            conn.execute(first, harmless)
            time.sleep(0.003)  # the body's own work, not a wait for anything
    assert conn.ways["optimistic"] >= 1, dict(conn.ways)
    conn.trained = dict(conn.ways)
    return conn


def _other_writer(conn) -> None:
    """What the other connection commits first, in both runs."""
    conn.execute("UPDATE c SET n = n + 10 WHERE id = 1")
    conn.execute("INSERT INTO items(c_id, note) VALUES (1, 'other')")
    conn.commit()


def _ours_statements(conn) -> dict:
    """The transaction under test; its cursors, results read only after the commit."""
    return {
        "update": conn.execute(FIRST, (1, 1)),
        "insert": conn.execute("INSERT INTO items(c_id, note) VALUES (1, 'ours')"),
        "many": conn.executemany("UPDATE c SET n = n + ? WHERE id = ?", [(1, 1), (1, 2)]),
        "query": conn.execute("SELECT id, n FROM c ORDER BY id"),
    }


def _seen(cursors: dict, conn) -> dict:
    return {
        "rowcounts": {name: cur.rowcount for name, cur in cursors.items()},
        "lastrowid": cursors["insert"].lastrowid,
        "rows": cursors["query"].fetchall(),
        "total_changes": conn.total_changes,
        "c": conn.execute("SELECT * FROM c ORDER BY id").fetchall(),
        "items": conn.execute("SELECT * FROM items ORDER BY id").fetchall(),
    }


@pytest.mark.timeout(60)
def test_an_unobserved_transaction_is_run_again_as_the_stdlib_would_run_it_after_the_other(
    tmp_path,
):
    ours_path, stdlib_path = str(tmp_path / "ours.db"), str(tmp_path / "stdlib.db")
    _setup(ours_path)
    _setup(stdlib_path)

    mine = _optimistic(ours_path)
    base = mine.total_changes
    cursors = _ours_statements(mine)
    other = sqlite_concurrent.connect(ours_path, mode="direct")
    _other_writer(other)
    mine.commit()
    ours = _seen(cursors, mine)
    ours["total_changes"] -= base
    assert mine.ways["replayed"] == 1 and not mine.in_transaction

    stdlib = sqlite3.connect(stdlib_path)
    _other_writer(sqlite3.connect(stdlib_path))
    cursors = _ours_statements(stdlib)
    stdlib.commit()
    assert ours == _seen(cursors, stdlib)


def _fetch_none(conn):
    assert conn.execute("SELECT n FROM c WHERE id = 99").fetchone() is None


def _iterate(conn):
    assert [n for (n,) in conn.execute("SELECT n FROM c WHERE id = 2")] == [0]


def _catch(conn):
    with pytest.raises(sqlite_concurrent.IntegrityError):
        conn.execute("INSERT INTO c VALUES (2, 0)")


def _savepoint(conn):
    conn.execute("SAVEPOINT s")
    conn.execute("UPDATE c SET n = n + 1 WHERE id = 2")
    conn.execute("RELEASE s")


def _blob(conn):
    conn.execute("INSERT INTO u VALUES ('blob')")
    conn.blobopen("u", "k", 1).close()


OBSERVED = {
    "fetch nothing": _fetch_none,
    "iterate": _iterate,
    "rowcount": lambda conn: conn.execute("UPDATE c SET n = n + 1 WHERE id = 2").rowcount,
    "lastrowid": lambda conn: conn.execute("INSERT INTO items(c_id) VALUES (2)").lastrowid,
    "total_changes": lambda conn: conn.total_changes,
    "error caught": _catch,
    "savepoint": _savepoint,
    "blob": _blob,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("observe", OBSERVED.values(), ids=OBSERVED.keys())
def test_a_transaction_that_saw_something_still_conflicts(db_path, observe):
    """Under ``transact``, which retries conflicts, it stays optimistic when it is observed."""
    _setup(db_path)
    mine = _optimistic(db_path)
    other = sqlite_concurrent.connect(db_path, mode="direct")

    def body(conn):
        conn.execute(FIRST, (1, 1))
        observe(conn)
        _other_writer(other)

    with pytest.raises(ConflictError) as caught:
        mine.transact(body, retries=0)
    assert caught.value.table == "c"
    assert mine.ways["replayed"] == 0 and not mine.in_transaction
    assert mine.execute("SELECT n FROM c WHERE id = 1").fetchone() == (10,)


def _write_then_look(conn, other) -> dict:
    conn.execute(FIRST, (1, 1))
    inserted = conn.execute("INSERT INTO items(c_id, note) VALUES (1, 'ours')")
    other(conn)  # commits, after ours wrote and before ours looks
    seen = {
        "n": conn.execute("SELECT n FROM c WHERE id = 1").fetchone(),
        "lastrowid": inserted.lastrowid,
    }
    conn.execute("UPDATE c SET n = ? WHERE id = 2", (seen["n"][0],))
    conn.commit()
    seen["c"] = conn.execute("SELECT * FROM c ORDER BY id").fetchall()
    seen["items"] = conn.execute("SELECT * FROM items ORDER BY id").fetchall()
    return seen


@pytest.mark.timeout(60)
def test_a_transaction_that_wrote_goes_direct_before_it_is_seen(tmp_path):
    """Outside ``transact``: as the stdlib's holds its write lock from its first write on,
    what it sees after writing is current, and it does not conflict.  Its statements so far
    run again on the latest database first, the other writer's commit included."""
    ours_path, stdlib_path = str(tmp_path / "ours.db"), str(tmp_path / "stdlib.db")
    _setup(ours_path)
    _setup(stdlib_path)
    other = sqlite_concurrent.connect(ours_path, mode="direct")
    mine = _optimistic(ours_path)
    ours = _write_then_look(mine, lambda _conn: _other_writer(other))
    assert mine.ways["escalated"] == 1 and mine.ways["replayed"] == 0

    # The stdlib serializes them the same way, the other writer first.
    stdlib = sqlite3.connect(stdlib_path)
    _other_writer(sqlite3.connect(stdlib_path))
    assert ours == _write_then_look(stdlib, lambda _conn: None)


@pytest.mark.timeout(60)
def test_an_error_running_again_comes_from_commit_as_the_stdlibs_class(tmp_path):
    ours_path, stdlib_path = str(tmp_path / "ours.db"), str(tmp_path / "stdlib.db")
    _setup(ours_path)
    _setup(stdlib_path)

    def other_takes_the_key(conn):
        conn.execute("INSERT INTO u VALUES ('k')")
        conn.execute("UPDATE c SET n = n + 10 WHERE id = 1")
        conn.commit()

    mine = _optimistic(ours_path)
    mine.execute(FIRST, (1, 1))
    mine.execute("INSERT INTO u VALUES ('k')")
    other_takes_the_key(sqlite_concurrent.connect(ours_path, mode="direct"))
    with pytest.raises(sqlite_concurrent.IntegrityError) as ours:
        mine.commit()
    assert "INSERT INTO u VALUES ('k')" in str(ours.value)
    assert not mine.in_transaction  # it ended, and nothing of it committed
    assert mine.execute("SELECT n FROM c WHERE id = 1").fetchone() == (10,)

    stdlib = sqlite3.connect(stdlib_path)
    other_takes_the_key(sqlite3.connect(stdlib_path))
    stdlib.execute(FIRST, (1, 1))
    with pytest.raises(sqlite3.IntegrityError) as theirs:
        stdlib.execute("INSERT INTO u VALUES ('k')")
    assert str(ours.value).startswith(str(theirs.value))
    assert ours.value.sqlite_errorname == theirs.value.sqlite_errorname


@pytest.mark.timeout(60)
def test_a_traced_transaction_is_not_run_again(db_path):
    """The trace would hear its statements twice: it conflicts as before."""
    _setup(db_path)
    mine = _optimistic(db_path)
    heard: list[str] = []
    mine.set_trace_callback(heard.append)
    mine.execute(FIRST, (1, 1))
    _other_writer(sqlite_concurrent.connect(db_path, mode="direct"))
    with pytest.raises(ConflictError):
        mine.commit()
    assert heard.count("UPDATE c SET n = n + 1 WHERE id = 1") == 1


@pytest.mark.timeout(60)
def test_mode_optimistic_raises_the_conflict(db_path):
    _setup(db_path)
    mine = sqlite_concurrent.connect(db_path, mode="optimistic")
    mine.execute(FIRST, (1, 1))
    _other_writer(sqlite_concurrent.connect(db_path, mode="direct"))
    with pytest.raises(ConflictError):
        mine.commit()
    assert mine.ways["replayed"] == 0


OFF_CALL = (
    "UPDATE doctors SET on_call = 0 WHERE id = ? "
    "AND (SELECT count(*) FROM doctors WHERE on_call) >= 2"
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("level", "on_call"), [("row", 0), ("page", 1)])
def test_write_skew_run_again_keeps_each_levels_promise(db_path, level, on_call):
    """Two doctors go off call if the other is still on it, the check inside the statement
    (nothing observed).  At the page level (serializable) ours reads a page the other
    changed: its merge conflicts, and run again it finds one doctor on call and leaves him,
    as running them one after the other does.  At the row level (snapshot isolation) both
    commit, as snapshot isolation allows (README, "Lock levels and isolation")."""
    setup = sqlite3.connect(db_path)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE doctors (id INTEGER PRIMARY KEY, on_call INTEGER NOT NULL)")
    setup.execute("INSERT INTO doctors VALUES (1, 1), (2, 1)")
    setup.commit()
    setup.close()
    mine = _optimistic(db_path, OFF_CALL, (99,), lock_level=level)
    mine.execute(OFF_CALL, (1,))
    other = sqlite_concurrent.connect(db_path, lock_level=level, mode="direct")
    with other:
        other.execute(OFF_CALL, (2,))
    mine.commit()
    assert mine.ways["replayed"] == (1 if level == "page" else 0)
    assert mine.execute("SELECT sum(on_call) FROM doctors").fetchone() == (on_call,)


@pytest.mark.timeout(60)
def test_last_insert_rowid_runs_again_from_where_the_transaction_began(tmp_path):
    """SQL's last_insert_rowid() before the transaction's first insert sees the value the
    connection had when the transaction began, in the new run too."""
    outcomes = []
    runs = ((sqlite_concurrent, tmp_path / "ours.db"), (sqlite3, tmp_path / "stdlib.db"))
    for module, path in runs:
        _setup(str(path))
        conn = _optimistic(str(path)) if module is sqlite_concurrent else sqlite3.connect(path)
        conn.execute("INSERT INTO items(c_id, note) VALUES (7, 'before')")
        conn.commit()
        if module is sqlite3:
            _other_writer(sqlite3.connect(path))
        conn.execute(FIRST, (1, 1))
        conn.execute("INSERT INTO items(c_id, note) VALUES (last_insert_rowid(), 'ours')")
        if module is sqlite_concurrent:
            _other_writer(sqlite_concurrent.connect(str(path), mode="direct"))
        conn.commit()
        outcomes.append(conn.execute("SELECT c_id, note FROM items ORDER BY id").fetchall())
    assert outcomes[0] == outcomes[1]


def _count(db_path: str, rows: str) -> int:
    return lock_rows(db_path, f"SELECT count(*) FROM {rows}")[0][0]


@pytest.mark.timeout(60)
def test_a_statement_that_waited_for_a_row_lock_runs_again_instead_of_conflicting(db_path):
    """Ours updates a row another transaction holds locked: it waits (at its next
    statement), the other commits, and the row ours updated on its snapshot is stale.
    Nothing of ours was seen: outside ``transact`` it runs again directly on the latest
    database, as the stdlib's would have run after waiting, and the update counts."""
    _setup(db_path)
    mine = _optimistic(db_path)
    locked, go = threading.Event(), threading.Event()

    def other():
        conn = sqlite_concurrent.connect(db_path, mode="optimistic", row_lock_delay=0)
        conn.execute("UPDATE c SET n = n + 10 WHERE id = 1")
        locked.set()
        go.wait(30)
        conn.commit()
        conn.close()

    _thread, done, outcome = in_thread(other)
    assert locked.wait(30)
    wait_until(lambda: _count(db_path, "locks WHERE resource LIKE 'row:%'"), "the row is locked")

    def release_once_ours_waits():
        wait_until(lambda: _count(db_path, "waiters"), "ours waits")
        go.set()

    waiter = threading.Thread(target=release_once_ours_waits)
    waiter.start()
    mine.execute(FIRST, (1, 1))  # on its snapshot, without the other's update
    # Its row locks are taken at its next statement (``row_lock_delay``): that one waits.
    mine.execute("INSERT INTO items(c_id, note) VALUES (1, 'ours')")
    waiter.join(30)
    assert done.wait(30) and outcome == [("ok", None)], outcome
    mine.commit()
    assert mine.execute("SELECT n FROM c WHERE id = 1").fetchone() == (11,)
    assert mine.execute("SELECT note FROM items").fetchall() == [("ours",)]
    assert mine.ways["escalated"] == 1
    assert mine.ways["optimistic"] == mine.trained["optimistic"]


@pytest.mark.timeout(60)
def test_a_bulk_load_is_not_kept_to_run_again(db_path):
    """Past ``MAX_PARAMETER_SETS`` rows the recording is dropped: the transaction keeps no copy
    of every row until its commit, and a conflict is raised as before."""
    from sqlite_concurrent.engine import rerun

    _setup(db_path)
    mine = _optimistic(db_path)
    mine.execute(FIRST, (1, 1))
    rows = [(2, f"row {i}") for i in range(rerun.MAX_PARAMETER_SETS + 1)]
    mine.executemany("INSERT INTO items(c_id, note) VALUES (?, ?)", rows)
    _other_writer(sqlite_concurrent.connect(db_path, mode="direct"))
    with pytest.raises(ConflictError):
        mine.commit()
    assert mine.ways["replayed"] == 0


@pytest.mark.timeout(60)
def test_a_returning_statement_run_again_shows_its_rowcount_once_its_rows_are_fetched(tmp_path):
    """As the stdlib's: 0 until the last row is fetched (rows run again at commit included)."""
    path = str(tmp_path / "ours.db")
    _setup(path)
    mine = _optimistic(path)
    mine.execute(FIRST, (1, 1))
    cursor = mine.execute("UPDATE c SET n = n + 1 WHERE id = 2 RETURNING id, n")
    _other_writer(sqlite_concurrent.connect(path, mode="direct"))
    mine.commit()
    assert mine.ways["replayed"] == 1
    assert cursor.rowcount == 0
    assert cursor.fetchall() == [(2, 1)]
    assert cursor.rowcount == 1
