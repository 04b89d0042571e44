"""Foreign keys fail where and as the stdlib's do, on file databases.

Each scenario runs through the stdlib and through us and must give the same outcomes: which
step raised, the class, message and SQLite error name, ``in_transaction`` after each step, and
the rows a fresh connection finds committed.
"""

from __future__ import annotations

import sqlite3

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

SCHEMA = """
    CREATE TABLE p (id INTEGER PRIMARY KEY);
    CREATE TABLE c (id INTEGER PRIMARY KEY,
                    pid REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);
    CREATE TABLE ci (id INTEGER PRIMARY KEY, pid REFERENCES p(id));
    INSERT INTO p VALUES (1);
"""


def _outcome(conn, step):
    try:
        result = step(conn)
        if hasattr(result, "fetchall"):
            result = result.fetchall()
    except sqlite3.Error as e:  # ours subclass the stdlib's classes
        result = (type(e).__name__, str(e), getattr(e, "sqlite_errorname", None))
    return result, conn.in_transaction


def _run(mod, path, steps, **kwargs):
    conn = mod.connect(path, **kwargs)
    if mod is sqlite3:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.execute("PRAGMA foreign_keys=ON")
    out = [_outcome(conn, step) for step in steps]
    conn.close()
    check = mod.connect(path)
    out.append(check.execute("SELECT 'c', * FROM c UNION ALL SELECT 'ci', * FROM ci").fetchall())
    check.close()
    return out


def _same(tmp_path, steps, **ours):
    stdlib = _run(sqlite3, str(tmp_path / "stdlib.db"), steps)
    assert _run(sqlite_concurrent, str(tmp_path / "ours.db"), steps, **ours) == stdlib
    return stdlib


def _sql(text):
    return lambda conn: conn.execute(text)


ORPHAN = _sql("INSERT INTO c VALUES (1, 99)")
FIX = _sql("INSERT INTO p VALUES (99)")
READ = _sql("SELECT * FROM c")
DEFER = _sql("PRAGMA defer_foreign_keys")
FAILED = ("IntegrityError", "FOREIGN KEY constraint failed", "SQLITE_CONSTRAINT_FOREIGNKEY")


@pytest.mark.parametrize(
    "commit",
    [lambda conn: conn.commit(), _sql("COMMIT"), _sql("END")],
    ids=["commit()", "COMMIT", "END"],
)
def test_deferred_violation_fails_at_commit_and_the_transaction_stays_open(tmp_path, commit):
    out = _same(tmp_path, [ORPHAN, commit, READ, commit, FIX, commit, READ])
    assert out[1] == (FAILED, True)
    assert out[2] == ([(1, 99)], True)
    assert out[5][1] is False and out[-1] == [("c", 1, 99)]


def test_rollback_after_the_failed_commit(tmp_path):
    out = _same(tmp_path, [ORPHAN, lambda c: c.commit(), lambda c: c.rollback(), READ])
    assert out[1] == (FAILED, True) and out[2] == (None, False) and out[-1] == []


def test_context_manager_rolls_back_a_failed_commit(tmp_path):
    def block(conn):
        with conn:
            conn.execute("INSERT INTO c VALUES (1, 99)")

    out = _same(tmp_path, [block, READ])
    assert out[0] == (FAILED, False) and out[-1] == []


@pytest.mark.parametrize("lock_level", ["row", "table"])
def test_autocommit_statement_fails_whole(tmp_path, lock_level):
    steps = [
        ORPHAN,
        _sql("PRAGMA defer_foreign_keys=ON"),
        _sql("INSERT INTO ci VALUES (1, 99)"),
        DEFER,
        _sql("INSERT INTO ci VALUES (2, 1)"),
    ]
    stdlib = _run(sqlite3, str(tmp_path / "stdlib.db"), steps, isolation_level=None)
    ours = _run(
        sqlite_concurrent,
        str(tmp_path / "ours.db"),
        steps,
        isolation_level=None,
        lock_level=lock_level,
    )
    assert ours == stdlib
    assert stdlib[0] == (FAILED, False) and stdlib[-1] == [("ci", 2, 1)]


def test_violation_after_a_schema_change_in_the_transaction(tmp_path):
    """The transaction runs on the merger from its CREATE TABLE on (architecture.md, "Exclusive
    operations")."""
    steps = [
        _sql("INSERT INTO ci VALUES (1, 1)"),
        _sql("CREATE TABLE other (x)"),
        ORPHAN,
        lambda c: c.commit(),
        READ,
        FIX,
        lambda c: c.commit(),
    ]
    out = _same(tmp_path, steps)
    assert out[3] == (FAILED, True) and out[6] == (None, False)


def test_defer_foreign_keys_defers_an_immediate_key_until_commit(tmp_path):
    steps = [
        _sql("INSERT INTO p VALUES (2)"),  # opens the transaction
        _sql("PRAGMA defer_foreign_keys=ON"),
        _sql("INSERT INTO ci VALUES (1, 99)"),
        DEFER,
        lambda c: c.commit(),
        DEFER,  # still set: the transaction is still open
        lambda c: c.rollback(),
        DEFER,  # SQLite turns it off when the transaction ends
        _sql("INSERT INTO ci VALUES (2, 98)"),  # immediate again: fails at once
        lambda c: c.rollback(),
    ]
    out = _same(tmp_path, steps)
    assert out[4] == (FAILED, True) and out[7] == ([(0,)], False)
    assert out[8][0][1] == "FOREIGN KEY constraint failed"


def test_defer_foreign_keys_set_outside_a_transaction(tmp_path):
    steps = [
        _sql("PRAGMA defer_foreign_keys=1"),
        DEFER,
        READ,  # an autocommit read ends a transaction too: SQLite turns it off
        DEFER,
        _sql("INSERT INTO ci VALUES (1, 99)"),  # so this fails at once
        _sql("PRAGMA defer_foreign_keys=1"),
        _sql("INSERT INTO ci VALUES (2, 99)"),  # opens a transaction that defers
        DEFER,
        FIX,
        lambda c: c.commit(),
        DEFER,  # the commit ended it
        _sql("PRAGMA defer_foreign_keys = yes"),
        _sql("SAVEPOINT a"),
        _sql("INSERT INTO ci VALUES (3, 98)"),
        _sql("RELEASE a"),  # the outermost savepoint: a commit, refused
        DEFER,
        lambda c: c.rollback(),
        DEFER,
    ]
    out = _same(tmp_path, steps)
    assert out[1] == ([(1,)], False) and out[3] == ([(0,)], False) and out[4][0] == FAILED
    assert out[7] == ([(1,)], True) and out[10] == ([(0,)], False)
    assert out[14] == (FAILED, True) and out[15] == ([(1,)], True)
    assert out[17] == ([(0,)], False)
    assert out[-1] == [("ci", 2, 99)]


def test_ours_a_parent_deleted_by_another_writer_is_a_conflict(tmp_path):
    """Only ours lets two writers overlap: the second to commit loses, with a ConflictError
    naming the kind, and nothing of it is written."""
    path = str(tmp_path / "app.db")
    # Optimistic: two transactions of one thread, both open.
    a = sqlite_concurrent.connect(path, mode="optimistic")
    b = sqlite_concurrent.connect(path, mode="optimistic")
    try:
        a.executescript(SCHEMA)
        a.execute("PRAGMA foreign_keys=ON")
        b.execute("PRAGMA foreign_keys=ON")
        a.execute("INSERT INTO c VALUES (1, 1)")
        a.execute("INSERT INTO ci VALUES (1, 1)")
        b.execute("DELETE FROM p WHERE id = 1")
        b.commit()
        with pytest.raises(sqlite_concurrent.ConflictError) as caught:
            a.commit()
        assert caught.value.kind == "foreign_key"
        assert not a.in_transaction
        assert a.execute("SELECT count(*) FROM c").fetchone() == (0,)
        assert a.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        a.close()
        b.close()


def test_direct_schema_change_with_unresolved_violations_is_as_in_the_stdlib(tmp_path):
    """A direct transaction is SQLite's own: the schema change simply runs."""
    steps = [
        _sql("INSERT INTO c VALUES (1, 99)"),
        _sql("CREATE TABLE other (x)"),
        _sql("INSERT INTO p VALUES (99)"),
        lambda c: c.commit(),
    ]
    out = _same(tmp_path, steps, mode="direct")
    assert out[1] == ([], True) and out[3] == (None, False)


def test_ours_schema_change_refused_while_violations_are_unresolved(tmp_path):
    """Differs from the stdlib, optimistically: the statement would move the transaction onto
    the merger as a changeset, which cannot carry the unresolved violations.  The transaction
    is untouched."""
    path = str(tmp_path / "app.db")
    conn = sqlite_concurrent.connect(path, mode="optimistic")
    try:
        conn.executescript(SCHEMA)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("INSERT INTO c VALUES (1, 99)")
        with pytest.raises(sqlite_concurrent.NotSupportedError, match="deferred foreign-key"):
            conn.execute("CREATE TABLE other (x)")
        assert conn.in_transaction
        conn.execute("INSERT INTO p VALUES (99)")
        conn.execute("CREATE TABLE other (x)")
        conn.commit()
        assert conn.execute("SELECT * FROM c").fetchall() == [(1, 99)]
        assert conn.execute("SELECT count(*) FROM other").fetchone() == (0,)
    finally:
        conn.close()
