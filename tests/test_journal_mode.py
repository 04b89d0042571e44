"""``PRAGMA journal_mode`` on a file database answers as the stdlib's does on a WAL database."""

from __future__ import annotations

import sqlite3

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

READS = [
    "PRAGMA journal_mode",
    "PRAGMA main.journal_mode",
    "pragma MAIN.JOURNAL_MODE;",
    'PRAGMA "main" . journal_mode',
    "/* mode */ PRAGMA journal_mode -- asked twice\n",
    "PRAGMA journal_mode=WAL",
    "PRAGMA main.journal_mode = 'wal';",
    "PRAGMA journal_mode(wal)",
    "PRAGMA journal_mode=bogus",  # not a mode: SQLite only reads it
]


@pytest.fixture(params=[sqlite3, sqlite_concurrent], ids=["sqlite3", "sqlite_concurrent"])
def conn(request, tmp_path):
    conn = request.param.connect(str(tmp_path / "app.db"))
    yield conn
    conn.close()


def _answers(conn, via_cursor: bool):
    out = []
    for sql in READS:
        cur = conn.cursor().execute(sql) if via_cursor else conn.execute(sql)
        out.append((sql, [d[0] for d in cur.description], cur.fetchall(), conn.in_transaction))
    return out


@pytest.mark.parametrize("via_cursor", [False, True], ids=["execute", "cursor"])
def test_reading_the_mode_outside_a_transaction(conn, via_cursor):
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    assert _answers(conn, via_cursor) == [
        (sql, ["journal_mode"], [("wal",)], False) for sql in READS
    ]


@pytest.mark.parametrize("opened_by", ["insert", "BEGIN", "BEGIN IMMEDIATE"])
@pytest.mark.parametrize("via_cursor", [False, True], ids=["execute", "cursor"])
def test_reading_the_mode_inside_a_transaction(conn, via_cursor, opened_by):
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (v)")
    conn.commit()
    if opened_by != "insert":
        conn.execute(opened_by)
    conn.execute("INSERT INTO t VALUES (1)")
    assert _answers(conn, via_cursor) == [
        (sql, ["journal_mode"], [("wal",)], True) for sql in READS
    ]
    conn.commit()
    assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]


def test_trace_shows_the_pragma_as_written(conn):
    conn.execute("PRAGMA journal_mode=WAL")
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("PRAGMA journal_mode")
    assert traced == ["PRAGMA journal_mode = wal", "PRAGMA journal_mode"]


@pytest.mark.parametrize("mode", ["DELETE", "memory", "off", "truncate", "Persist"])
def test_ours_leaving_wal_is_refused_and_changes_nothing(tmp_path, mode):
    """Differs from the stdlib on purpose: the database must stay in WAL mode.  Inside a
    transaction the refusal leaves the transaction as it was."""
    conn = sqlite_concurrent.connect(str(tmp_path / "app.db"))
    try:
        conn.execute("CREATE TABLE t (v)")
        for sql in (f"PRAGMA journal_mode={mode}", f"PRAGMA main.journal_mode('{mode}')"):
            with pytest.raises(sqlite_concurrent.NotSupportedError, match="WAL mode"):
                conn.execute(sql)
            conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(sqlite_concurrent.NotSupportedError, match="WAL mode"):
                conn.execute(sql)
            assert conn.in_transaction
            conn.commit()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
