"""Small changesets are applied as plain statements (``replay``): each case here applies the
same changeset both ways, onto databases that another writer changed meanwhile, and requires
the same outcome (applied, or the same conflict kind, table and key) and the same rows."""

from __future__ import annotations

import contextlib
from typing import Any

import apsw
import pytest

from sqlite_concurrent.commit import merge, replay
from sqlite_concurrent.errors import ConflictError

SCHEMA = """
CREATE TABLE acc(id INTEGER PRIMARY KEY, bal INT NOT NULL, tag TEXT UNIQUE COLLATE NOCASE,
    note TEXT);
CREATE TABLE plain(a, b);
CREATE TABLE pairs(x TEXT, y INT, v, PRIMARY KEY (x, y)) WITHOUT ROWID;
CREATE TABLE gen(id INTEGER PRIMARY KEY, n INT, twice INT GENERATED ALWAYS AS (n * 2) STORED);
INSERT INTO acc VALUES (1, 10, 'a', 'x'), (2, 20, 'b', 'y'), (3, 30, 'c', 'z');
INSERT INTO plain VALUES (1, 'one'), (2, 'two');
INSERT INTO pairs VALUES ('p', 1, 'v1'), ('p', 2, 'v2');
INSERT INTO gen(id, n) VALUES (1, 5);
"""

# (name, the transaction's statements, another writer's statements committed before the apply,
#  expected outcome: None for applied, else the conflict kind)
CASES = [
    ("update", "UPDATE acc SET bal = 11 WHERE id = 1", "", None),
    (
        "update_changed",
        "UPDATE acc SET bal = 11 WHERE id = 1",
        "UPDATE acc SET bal = 99 WHERE id = 1",
        "data",
    ),
    (
        "update_other_column",
        "UPDATE acc SET bal = 11 WHERE id = 1",
        "UPDATE acc SET note = 'n' WHERE id = 1",
        None,
    ),
    (
        "update_deleted",
        "UPDATE acc SET bal = 11 WHERE id = 1",
        "DELETE FROM acc WHERE id = 1",
        "notfound",
    ),
    ("delete", "DELETE FROM acc WHERE id = 2", "", None),
    (
        "delete_changed",
        "DELETE FROM acc WHERE id = 2",
        "UPDATE acc SET note = 'n' WHERE id = 2",
        "data",
    ),
    ("delete_deleted", "DELETE FROM acc WHERE id = 2", "DELETE FROM acc WHERE id = 2", "notfound"),
    ("insert", "INSERT INTO acc VALUES (4, 40, 'd', NULL)", "", None),
    (
        "insert_same_key",
        "INSERT INTO acc VALUES (4, 40, 'd', NULL)",
        "INSERT INTO acc VALUES (4, 1, 'q', NULL)",
        "conflict",
    ),
    (
        "insert_same_unique",
        "INSERT INTO acc VALUES (4, 40, 'd', NULL)",
        "INSERT INTO acc VALUES (5, 1, 'd', NULL)",
        "constraint",
    ),
    (
        "update_into_unique",
        "UPDATE acc SET tag = 'e' WHERE id = 3",
        "INSERT INTO acc VALUES (5, 1, 'e', NULL)",
        "constraint",
    ),
    # The changeset is not in statement order: the insert may come before the delete that
    # frees its UNIQUE value, and must then wait for it.
    (
        "unique_handed_over",
        "DELETE FROM acc WHERE id = 2; "
        "INSERT INTO acc VALUES (7, 70, 'b', NULL); "
        "UPDATE acc SET tag = 'a2' WHERE id = 1; "
        "INSERT INTO acc VALUES (8, 80, 'a', NULL)",
        "",
        None,
    ),
    (
        "several_tables",
        "UPDATE acc SET bal = 1; "
        "INSERT INTO plain VALUES (3, 'three'); "
        "DELETE FROM pairs WHERE y = 1; "
        "UPDATE gen SET n = 6",
        "",
        None,
    ),
    (
        "no_primary_key",
        "UPDATE plain SET b = 'uno' WHERE a = 1; "
        "DELETE FROM plain WHERE a = 2; "
        "INSERT INTO plain VALUES (9, 'nine')",
        "",
        None,
    ),
    (
        "no_primary_key_changed",
        "UPDATE plain SET b = 'uno' WHERE a = 1",
        "UPDATE plain SET b = 'eins' WHERE a = 1",
        "data",
    ),
    (
        "without_rowid",
        "UPDATE pairs SET v = 'w' WHERE x = 'p' AND y = 2; INSERT INTO pairs VALUES ('q', 1, 'n')",
        "",
        None,
    ),
    (
        "without_rowid_taken",
        "INSERT INTO pairs VALUES ('q', 1, 'n')",
        "INSERT INTO pairs VALUES ('q', 1, 'other')",
        "conflict",
    ),
    (
        "generated",
        "UPDATE gen SET n = 7 WHERE id = 1; INSERT INTO gen(id, n) VALUES (2, 3)",
        "",
        None,
    ),
    (
        "generated_changed",
        "UPDATE gen SET n = 7 WHERE id = 1",
        "UPDATE gen SET n = 8 WHERE id = 1",
        "data",
    ),
]


def _database(path: str, extra_schema: str = "") -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.execute(SCHEMA + extra_schema)
    return conn


def _changeset(path: str, sql: str, extra_schema: str) -> bytes:
    conn = _database(path, extra_schema)
    session = apsw.Session(conn, "main")
    session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
    session.attach()
    conn.execute(sql)
    changeset = session.changeset()
    session.close()
    conn.close()
    return changeset


def _rows(conn: apsw.Connection) -> dict[str, list[Any]]:
    return {
        t: conn.execute(f"SELECT _rowid_, * FROM {t} ORDER BY 1").fetchall()
        if t != "pairs"
        else conn.execute("SELECT * FROM pairs ORDER BY 1, 2").fetchall()
        for t in ("acc", "plain", "pairs", "gen")
    }


def _outcome(error: ConflictError | None) -> tuple[Any, ...] | None:
    return None if error is None else (error.kind, error.table, error.key)


def _by_session(conn: apsw.Connection, changeset: bytes) -> ConflictError | None:
    found: list[ConflictError] = []

    def on_conflict(reason: int, change: apsw.TableChange) -> int:
        kind = merge._KINDS.get(reason, "constraint")
        values = change.old if change.old is not None else change.new
        key = tuple(values[i] for i in sorted(change.pk_columns))
        found.append(merge.conflict(change.name, key, kind))
        return apsw.SQLITE_CHANGESET_ABORT

    with contextlib.suppress(apsw.AbortError):
        apsw.Changeset.apply(changeset, conn, conflict=on_conflict, flags=merge._APPLY_FLAGS)
    return found[0] if found else None


def _by_replay(
    conn: apsw.Connection, changeset: bytes, *, foreign_keys: bool = False, rows: Any = None
) -> Any:
    (cookie,) = conn.execute("PRAGMA schema_version").fetchone()
    planned = replay.plan(conn, changeset, cookie=cookie, foreign_keys=foreign_keys)
    if planned is None:
        return False, None
    try:
        replay.run(conn, replay.steps(planned, rows), keep=None, conflict=merge.conflict)
    except ConflictError as e:
        return True, e
    return True, None


def _both(tmp_path, txn_sql: str, other_sql: str, extra_schema: str = "", **kw: Any):
    changeset = _changeset(str(tmp_path / "txn.db"), txn_sql, extra_schema)
    results = []
    for name in ("session.db", "replay.db"):
        conn = _database(str(tmp_path / name), extra_schema)
        if other_sql:
            conn.execute(other_sql)
        conn.execute("BEGIN IMMEDIATE")
        if name == "session.db":
            used, error = True, _by_session(conn, changeset)
        else:
            used, error = _by_replay(conn, changeset, **kw)
        # A conflict rolls the whole transaction back, whatever was applied before it.
        conn.execute("ROLLBACK" if error is not None else "COMMIT")
        results.append((used, _outcome(error), _rows(conn)))
        conn.close()
    return results


@pytest.mark.parametrize(
    ("txn_sql", "other_sql", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_replay_does_what_the_session_apply_does(tmp_path, txn_sql, other_sql, expected):
    (_, by_session, session_rows), (used, by_replay, replay_rows) = _both(
        tmp_path, txn_sql, other_sql
    )
    assert used, "a plain table and a small changeset go through statements"
    assert by_replay == by_session
    assert (by_replay or (None,))[0] == expected
    assert replay_rows == session_rows
    if expected is None:
        assert replay_rows != _rows(_database(str(tmp_path / "fresh.db"))), "nothing applied"


def test_tables_with_conflict_clauses_stay_with_the_session_apply(tmp_path):
    extra = "CREATE TABLE r(id INTEGER PRIMARY KEY, u UNIQUE ON CONFLICT REPLACE);"
    _, (used, error, _) = _both(tmp_path, "INSERT INTO r VALUES (1, 'u')", "", extra)
    assert not used and error is None


@pytest.mark.parametrize("enforced", [True, False])
def test_foreign_keys_enforced_stay_with_the_session_apply(tmp_path, enforced):
    extra = (
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
        "CREATE TABLE child(id INTEGER PRIMARY KEY, p REFERENCES parent(id) ON DELETE CASCADE);"
        "INSERT INTO parent VALUES (1);"
    )
    (_, _, _), (used, error, _) = _both(
        tmp_path, "INSERT INTO child VALUES (1, 1)", "", extra, foreign_keys=enforced
    )
    assert used is not enforced and error is None


def test_big_changesets_stay_with_the_session_apply(tmp_path):
    rows = replay.SMALL // 8
    sql = "; ".join(f"INSERT INTO plain VALUES ({i}, 'row {i}')" for i in range(10, 10 + rows))
    (_, by_session, _), (used, by_replay, _) = _both(tmp_path, sql, "")
    assert not used and by_replay is by_session is None


# Snapshot isolation's whole-row check, done by the UPDATE itself when the merge has the
# snapshot rows: (the transaction, another writer's change since, expected outcome).
WHOLE_ROW_CASES = [
    ("UPDATE acc SET bal = 11 WHERE id = 1", "", None),
    ("UPDATE acc SET bal = 11 WHERE id = 1", "UPDATE acc SET note = 'n' WHERE id = 1", "data"),
    ("UPDATE acc SET bal = 11 WHERE id = 1", "UPDATE acc SET bal = 10 WHERE id = 1", None),
    ("UPDATE acc SET bal = 11 WHERE id = 1", "DELETE FROM acc WHERE id = 1", "notfound"),
    ("UPDATE plain SET b = 'uno' WHERE a = 1", "UPDATE plain SET a = 1 WHERE a = 1", None),
    ("UPDATE pairs SET v = 'w' WHERE x = 'p' AND y = 2", "", None),
    ("UPDATE pairs SET v = 'w' WHERE x = 'p' AND y = 2", "UPDATE pairs SET v = 'v2'", None),
    ("UPDATE gen SET n = 7 WHERE id = 1", "", None),
    # A NOCASE column changed only in case was changed: compared byte for byte.
    ("UPDATE acc SET bal = 11 WHERE id = 2", "UPDATE acc SET tag = 'B' WHERE id = 2", "data"),
]


@pytest.mark.parametrize(("txn_sql", "other_sql", "expected"), WHOLE_ROW_CASES)
def test_whole_row_update_sees_any_change_to_the_row(tmp_path, txn_sql, other_sql, expected):
    extra = ""
    changeset = _changeset(str(tmp_path / "txn.db"), txn_sql, extra)
    snapshot = _database(str(tmp_path / "snap.db"), extra)
    target = _database(str(tmp_path / "target.db"), extra)
    if other_sql:
        target.execute(other_sql)
    shapes: dict[Any, Any] = {}
    _, rows, _, _ = merge.read_changeset(snapshot, changeset, shapes)
    assert rows is not None, "a small changeset keeps the snapshot rows"
    target.execute("BEGIN IMMEDIATE")
    used, error = _by_replay(target, changeset, rows=rows.rows)
    target.execute("ROLLBACK" if error is not None else "COMMIT")
    assert used
    assert (error.kind if error else None) == expected
    # The digest check the merge falls back on gives the same verdict.
    verdict = None
    for images in rows.images():
        for key, digest in images:
            now = target.execute(images.select, key).fetchone()
            if expected is None and error is None:
                continue  # applied: the row has moved on
            if merge.row_digest(now) != digest:
                verdict = "data" if now is not None else "notfound"
    assert verdict == expected
