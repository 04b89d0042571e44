"""What a committed (or rolled back) transaction leaves in the database.

Each scenario script runs once on the stdlib ``sqlite3`` module and once on ``sqlite_concurrent``,
on separate files; the final contents of every user table must be identical.

Files are read back through APSW's SQLite (stock SQLite, the library ours uses), or by the stdlib
from another process (``stdlib_in_other_process``): the stdlib and APSW each carry their own copy
of SQLite, which drop each other's POSIX locks, so sqlite_concurrent refuses a stdlib connection
to a file this process has opened with it.
"""

from __future__ import annotations

import ast
import os
import sqlite3
import subprocess
import sys

import pytest
from conftest import stock_apsw

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

MARKER_TABLE = "_sqlite_concurrent_commits"

_QUERY_SCRIPT = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
try:
    print(repr(c.execute(sys.argv[2]).fetchall()))
finally:
    c.close()
"""


def stdlib_in_other_process(path, sql):
    """Rows of ``sql`` as a stdlib connection in a separate process sees them."""
    out = subprocess.run(
        [sys.executable, "-c", _QUERY_SCRIPT, str(path), sql],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return ast.literal_eval(out.stdout)


def dump(path):
    """Every user table's rows, plus sqlite_sequence.

    Rowids are included for tables without a declared PRIMARY KEY, where the rowid is the key.
    A table with a declared non-INTEGER key keeps its rowid as an implementation detail (a
    changeset, like VACUUM, does not preserve it), so it is left out there.

    """
    c = stock_apsw(path)
    try:
        tables = [
            r[0]
            for r in c.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != ? ORDER BY name",
                (MARKER_TABLE,),
            )
        ]
        out = {}
        for name in tables:
            (declared_pk,) = c.execute(
                "SELECT count(*) FROM pragma_table_info(?) WHERE pk > 0", (name,)
            ).fetchone()
            # The columns SELECT * returns: all but the hidden ones of virtual tables.
            (ncols,) = c.execute(
                "SELECT count(*) FROM pragma_table_xinfo(?) WHERE hidden != 1", (name,)
            ).fetchone()
            order = ", ".join(str(i + 1) for i in range(ncols))
            if declared_pk:
                sql = f'SELECT * FROM "{name}" ORDER BY {order}'
            else:
                sql = f'SELECT _rowid_, * FROM "{name}" ORDER BY 1'
            out[name] = c.execute(sql).fetchall()
        has_sequence = c.execute(
            "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'"
        ).fetchone()
        if has_sequence:
            out["sqlite_sequence"] = c.execute(
                "SELECT name, seq FROM sqlite_sequence ORDER BY name"
            ).fetchall()
        return out
    finally:
        c.close()


def check_file_health(path, *, wal):
    c = stock_apsw(path)
    try:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
        if wal:
            assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        c.close()


def run_on_both(tmp_path, script, **connect_kwargs):
    """Run ``script(conn)`` on a stdlib file and on one of ours; return both dumps."""
    dumps = {}
    for mod in (sqlite3, sqlite_concurrent):
        path = str(tmp_path / f"{mod.__name__}.db")
        conn = mod.connect(path, **connect_kwargs)
        try:
            script(conn)
            assert not conn.in_transaction, "scenario scripts must end with a commit"
        finally:
            conn.close()
        check_file_health(path, wal=mod is sqlite_concurrent)
        dumps[mod.__name__] = dump(path)
    return dumps["sqlite3"], dumps["sqlite_concurrent"]


def ddl(conn, *statements):
    """Schema changes, each outside a transaction (ours refuses DDL inside one)."""
    assert not conn.in_transaction
    for sql in statements:
        conn.execute(sql)
    if conn.in_transaction:  # the stdlib in some versions
        conn.commit()


@pytest.fixture
def ours_factory(tmp_path):
    """Open sqlite_concurrent connections on ``tmp_path/app.db``; all closed at teardown."""
    opened = []

    def _open(**kwargs):
        conn = sqlite_concurrent.connect(str(tmp_path / "app.db"), **kwargs)
        opened.append(conn)
        return conn

    yield _open
    for conn in reversed(opened):
        conn.close()


@pytest.fixture
def ours(ours_factory):
    """A sqlite_concurrent connection on a file with ``t(id PK, v)`` holding two rows."""
    conn = ours_factory()
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "one"), (2, "two")])
    conn.commit()
    return conn


def marker_count(conn):
    exists = conn.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (MARKER_TABLE,)).fetchone()
    return conn.execute(f"SELECT count(*) FROM {MARKER_TABLE}").fetchone()[0] if exists else 0


def wal_size(tmp_path):
    return os.path.getsize(tmp_path / "app.db-wal")


# -- transactions that write nothing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "statements",
    [
        pytest.param(["BEGIN", "SELECT * FROM t"], id="explicit-begin-select"),
        pytest.param(["UPDATE t SET v = 'x' WHERE id = 99"], id="update-matching-nothing"),
        pytest.param(["DELETE FROM t WHERE id > 99"], id="delete-matching-nothing"),
        pytest.param(
            ["INSERT INTO t VALUES (3, 'three')", "DELETE FROM t WHERE id = 3"],
            id="insert-then-delete",
        ),
        pytest.param(["UPDATE t SET v = 'one' WHERE id = 1"], id="update-to-same-value"),
    ],
)
@pytest.mark.usefixtures("optimistic")  # a direct one is stock SQLite's: its pages are written
def test_transaction_that_writes_nothing_commits_as_a_no_op(
    ours, ours_factory, tmp_path, statements
):
    watcher = ours_factory()
    markers = marker_count(ours)
    (version,) = watcher.execute("PRAGMA data_version").fetchone()
    size = wal_size(tmp_path)
    for sql in statements:
        ours.execute(sql)
    assert ours.in_transaction
    ours.commit()
    assert not ours.in_transaction
    assert marker_count(ours) == markers
    assert wal_size(tmp_path) == size
    assert watcher.execute("PRAGMA data_version").fetchone() == (version,)
    assert watcher.execute("SELECT * FROM t ORDER BY id").fetchall() == [(1, "one"), (2, "two")]


def test_committing_a_write_leaves_nothing_of_ours_in_the_database(ours, tmp_path):
    """The counterpart of the no-op test: a real write reaches the WAL, and the schema stays
    the application's own (a transaction its own process commits needs no commit marker)."""
    size = wal_size(tmp_path)
    ours.execute("UPDATE t SET v = 'uno' WHERE id = 1")
    ours.execute("INSERT INTO t VALUES (3, 'three')")
    ours.commit()
    assert marker_count(ours) == 0
    assert [r[0] for r in ours.execute("SELECT name FROM sqlite_schema")] == ["t"]
    assert wal_size(tmp_path) > size
    assert stdlib_in_other_process(tmp_path / "app.db", "SELECT * FROM t ORDER BY id") == [
        (1, "uno"),
        (2, "two"),
        (3, "three"),
    ]


# -- transactions that roll back -------------------------------------------------------------------


def _write_some(conn):
    conn.execute("UPDATE t SET v = 'changed' WHERE id = 1")
    conn.execute("DELETE FROM t WHERE id = 2")
    conn.execute("INSERT INTO t VALUES (3, 'three')")


def _end_with_rollback_method(conn):
    conn.rollback()


def _end_with_rollback_sql(conn):
    conn.execute("ROLLBACK")


def _end_with_context_manager_exception(conn):
    with pytest.raises(RuntimeError), conn:
        raise RuntimeError("abandon")


def _end_with_close(conn):
    conn.close()


@pytest.mark.parametrize(
    "end",
    [
        _end_with_rollback_method,
        _end_with_rollback_sql,
        _end_with_context_manager_exception,
        _end_with_close,
    ],
    ids=["rollback()", "ROLLBACK", "with-exception", "close()"],
)
def test_rolled_back_transaction_is_never_visible(ours, ours_factory, tmp_path, end):
    other = ours_factory()
    markers = marker_count(other)
    original = [(1, "one"), (2, "two")]
    ours.execute("BEGIN")
    _write_some(ours)
    assert ours.execute("SELECT * FROM t ORDER BY id").fetchall() == [
        (1, "changed"),
        (3, "three"),
    ]
    # Uncommitted: invisible to a second connection and to the stdlib in another process.
    assert other.execute("SELECT * FROM t ORDER BY id").fetchall() == original
    assert stdlib_in_other_process(tmp_path / "app.db", "SELECT * FROM t ORDER BY id") == original
    end(ours)
    assert other.execute("SELECT * FROM t ORDER BY id").fetchall() == original
    assert stdlib_in_other_process(tmp_path / "app.db", "SELECT * FROM t ORDER BY id") == original
    assert marker_count(other) == markers
    # The other connection can still write the rows the abandoned transaction touched.
    other.execute("UPDATE t SET v = 'later' WHERE id = 2")
    other.commit()
    assert stdlib_in_other_process(tmp_path / "app.db", "SELECT * FROM t ORDER BY id") == [
        (1, "one"),
        (2, "later"),
    ]


def test_rollback_then_new_transaction_starts_from_committed_state(ours, tmp_path):
    _write_some(ours)
    ours.rollback()
    ours.execute("UPDATE t SET v = v || '!'")
    ours.commit()
    assert stdlib_in_other_process(tmp_path / "app.db", "SELECT * FROM t ORDER BY id") == [
        (1, "one!"),
        (2, "two!"),
    ]


# -- scenarios compared with the stdlib ------------------------------------------------------------


def scenario_rowid_table(conn):
    ddl(conn, "CREATE TABLE log(msg TEXT, n INTEGER)")
    conn.executemany("INSERT INTO log VALUES (?, ?)", [(f"m{i}", i) for i in range(20)])
    conn.commit()
    conn.execute("UPDATE log SET msg = msg || '-u' WHERE n % 3 = 0")
    conn.execute("DELETE FROM log WHERE n % 4 = 1")
    conn.commit()
    conn.execute("INSERT INTO log VALUES ('late', 100)")
    conn.execute("INSERT INTO log(rowid, msg, n) VALUES (500, 'explicit', 500)")
    conn.execute("UPDATE log SET n = -n WHERE rowid = 500")
    conn.execute("DELETE FROM log WHERE rowid = 2")
    conn.commit()
    # Same values in two rows: only the rowid tells them apart.
    conn.execute("INSERT INTO log VALUES ('dup', 1)")
    conn.execute("INSERT INTO log VALUES ('dup', 1)")
    conn.commit()
    conn.execute("DELETE FROM log WHERE rowid = (SELECT max(rowid) FROM log)")
    conn.commit()


def scenario_rowid_table_with_rowid_update(conn):
    ddl(conn, "CREATE TABLE items(name TEXT, qty REAL)")
    conn.executemany("INSERT INTO items VALUES (?, ?)", [("a", 1.5), ("b", 2.5), ("c", 3.5)])
    conn.commit()
    conn.execute("UPDATE items SET rowid = rowid + 10 WHERE name = 'b'")
    conn.execute("UPDATE items SET qty = qty * 2")
    conn.commit()


def scenario_without_rowid(conn):
    ddl(
        conn,
        "CREATE TABLE kv(a TEXT, b INTEGER, v, PRIMARY KEY(a, b)) WITHOUT ROWID",
        "CREATE TABLE single(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
    )
    conn.executemany(
        "INSERT INTO kv VALUES (?, ?, ?)",
        [(a, b, f"{a}{b}") for a in "xyz" for b in range(3)],
    )
    conn.executemany("INSERT INTO single VALUES (?, ?)", [("k1", 1), ("k2", 2)])
    conn.commit()
    conn.execute("UPDATE kv SET v = upper(v) WHERE b = 1")
    conn.execute("DELETE FROM kv WHERE a = 'y'")
    conn.execute("UPDATE kv SET b = b + 10 WHERE a = 'z' AND b = 2")  # changes the key
    conn.execute("UPDATE single SET v = v * 100")
    conn.execute("DELETE FROM single WHERE k = 'k1'")
    conn.commit()
    conn.execute("INSERT INTO kv VALUES ('y', 0, 'back')")
    conn.execute("INSERT OR REPLACE INTO single VALUES ('k2', 'replaced')")
    conn.commit()


def scenario_fk_cascade(conn):
    ddl(
        conn,
        "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE child(id INTEGER PRIMARY KEY,"
        " parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE ON UPDATE CASCADE,"
        " note TEXT)",
        "CREATE TABLE orphaned(child_id INTEGER, parent_id INTEGER)",
        "CREATE TRIGGER child_deleted AFTER DELETE ON child BEGIN"
        " INSERT INTO orphaned VALUES (old.id, old.parent_id); END",
    )
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executemany("INSERT INTO parent VALUES (?, ?)", [(1, "p1"), (2, "p2"), (3, "p3")])
    conn.executemany(
        "INSERT INTO child VALUES (?, ?, ?)",
        [(10, 1, "a"), (11, 1, "b"), (12, 2, "c"), (13, 3, "d")],
    )
    conn.commit()
    conn.execute("DELETE FROM parent WHERE id = 1")
    conn.commit()
    conn.execute("UPDATE parent SET id = 20 WHERE id = 2")
    conn.commit()


def scenario_fk_set_null(conn):
    ddl(
        conn,
        "CREATE TABLE author(id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE book(id INTEGER PRIMARY KEY,"
        " author_id INTEGER REFERENCES author(id) ON DELETE SET NULL, title TEXT)",
    )
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executemany("INSERT INTO author VALUES (?, ?)", [(1, "x"), (2, "y")])
    conn.executemany(
        "INSERT INTO book VALUES (?, ?, ?)", [(1, 1, "b1"), (2, 2, "b2"), (3, 1, "b3")]
    )
    conn.commit()
    conn.execute("DELETE FROM author WHERE id = 1")
    conn.commit()


def scenario_fk_violation_fails_the_statement(conn):
    ddl(
        conn,
        "CREATE TABLE parent(id INTEGER PRIMARY KEY)",
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL"
        " REFERENCES parent(id))",
    )
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("INSERT INTO parent VALUES (1)")
    conn.execute("INSERT INTO child VALUES (1, 1)")
    with pytest.raises(sqlite3.IntegrityError) as exc_info:
        conn.execute("INSERT INTO child VALUES (2, 99)")
    assert type(exc_info.value).__name__ == "IntegrityError"
    assert conn.in_transaction
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM parent WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE child SET parent_id = 42 WHERE id = 1")
    conn.execute("INSERT INTO parent VALUES (2)")
    conn.execute("INSERT INTO child VALUES (3, 2)")
    conn.commit()


# Accounts whose every insert, update and delete a trigger records in ``audit``.
AUDITED_ACCOUNTS = (
    "CREATE TABLE account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
    "CREATE TABLE audit(seq INTEGER PRIMARY KEY, account_id INTEGER, op TEXT,"
    " old_balance INTEGER, new_balance INTEGER)",
    "CREATE TRIGGER account_ins AFTER INSERT ON account BEGIN"
    " INSERT INTO audit(account_id, op, new_balance) VALUES (new.id, 'ins', new.balance);"
    " END",
    "CREATE TRIGGER account_upd AFTER UPDATE ON account BEGIN"
    " INSERT INTO audit(account_id, op, old_balance, new_balance)"
    " VALUES (new.id, 'upd', old.balance, new.balance); END",
    "CREATE TRIGGER account_del BEFORE DELETE ON account BEGIN"
    " INSERT INTO audit(account_id, op, old_balance) VALUES (old.id, 'del', old.balance);"
    " END",
)


def scenario_triggers(conn):
    ddl(conn, *AUDITED_ACCOUNTS)
    conn.executemany("INSERT INTO account VALUES (?, ?)", [(1, 100), (2, 200)])
    conn.commit()
    conn.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
    conn.execute("UPDATE account SET balance = balance + 30 WHERE id = 2")
    conn.commit()
    conn.execute("DELETE FROM account WHERE id = 1")
    conn.execute("INSERT INTO account VALUES (3, 0)")
    conn.commit()


def scenario_triggers_between_merges_and_autocommit(conn):
    # Autocommit statements run on the merger, where merges turn triggers off (the changeset
    # already holds what they did): each kind must still see its triggers fire exactly once.
    ddl(conn, *AUDITED_ACCOUNTS)
    conn.execute("INSERT INTO account VALUES (1, 100)")
    for balance in (90, 80, 70):
        conn.execute("BEGIN")
        conn.execute("UPDATE account SET balance = ? WHERE id = 1", (balance,))
        conn.execute("COMMIT")
        conn.execute("UPDATE account SET balance = balance - 1 WHERE id = 1")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO account VALUES (2, 5)")
    conn.execute("COMMIT")
    conn.execute("DELETE FROM account WHERE id = 2")


def scenario_autoincrement(conn):
    ddl(conn, "CREATE TABLE ticket(id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)")
    conn.executemany("INSERT INTO ticket(what) VALUES (?)", [("a",), ("b",), ("c",)])
    conn.commit()
    conn.execute("DELETE FROM ticket WHERE id = 3")
    conn.commit()
    conn.execute("INSERT INTO ticket(what) VALUES ('d')")  # 4, never 3 again
    conn.commit()
    conn.execute("INSERT INTO ticket(id, what) VALUES (50, 'jump')")
    conn.commit()
    conn.execute("DELETE FROM ticket WHERE id = 50")
    conn.commit()
    conn.execute("INSERT INTO ticket(what) VALUES ('after jump')")  # 51
    conn.commit()


def scenario_autoincrement_insert_and_delete_in_one_transaction(conn):
    ddl(conn, "CREATE TABLE ticket(id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)")
    conn.executemany("INSERT INTO ticket(what) VALUES (?)", [("a",), ("b",)])
    conn.commit()
    cur = conn.execute("INSERT INTO ticket(id, what) VALUES (50, 'jump')")
    assert cur.lastrowid == 50
    conn.execute("DELETE FROM ticket WHERE id = 50")
    conn.commit()
    conn.execute("INSERT INTO ticket(what) VALUES ('after jump')")  # 51: 50 was handed out
    conn.commit()


def scenario_generated_columns(conn):
    ddl(
        conn,
        "CREATE TABLE rect(id INTEGER PRIMARY KEY, w REAL, h REAL,"
        " area REAL GENERATED ALWAYS AS (w * h) VIRTUAL,"
        " label TEXT GENERATED ALWAYS AS ('r' || id || ':' || (w * h)) STORED)",
    )
    conn.executemany("INSERT INTO rect(id, w, h) VALUES (?, ?, ?)", [(1, 2, 3), (2, 4, 5)])
    conn.commit()
    conn.execute("UPDATE rect SET w = 10 WHERE id = 1")
    conn.execute("INSERT INTO rect(id, w, h) VALUES (3, 0.5, 0.5)")
    conn.execute("DELETE FROM rect WHERE id = 2")
    conn.commit()


def scenario_upsert_and_replace(conn):
    ddl(conn, "CREATE TABLE counter(name TEXT PRIMARY KEY, hits INTEGER NOT NULL, tag TEXT UNIQUE)")
    conn.execute("INSERT INTO counter VALUES ('a', 1, 'ta')")
    conn.execute("INSERT INTO counter VALUES ('b', 1, 'tb')")
    conn.commit()
    conn.execute(
        "INSERT INTO counter VALUES ('a', 1, 'ta2') "
        "ON CONFLICT(name) DO UPDATE SET hits = hits + 1, tag = excluded.tag"
    )
    conn.execute("INSERT OR REPLACE INTO counter VALUES ('c', 7, 'tb')")  # evicts 'b'
    conn.execute("REPLACE INTO counter VALUES ('a', 100, 'ta3')")
    conn.commit()


@pytest.mark.parametrize(
    "script",
    [
        scenario_rowid_table,
        scenario_rowid_table_with_rowid_update,
        scenario_without_rowid,
        scenario_fk_cascade,
        scenario_fk_set_null,
        scenario_fk_violation_fails_the_statement,
        scenario_triggers,
        scenario_autoincrement,
        scenario_autoincrement_insert_and_delete_in_one_transaction,
        scenario_generated_columns,
        scenario_upsert_and_replace,
    ],
    ids=lambda f: f.__name__.removeprefix("scenario_"),
)
def test_scenario_leaves_the_same_tables_as_the_stdlib(tmp_path, script):
    expected, actual = run_on_both(tmp_path, script)
    assert actual == expected
    assert any(expected.values()), "the scenario must leave some rows to compare"


def test_rowid_table_rows_keep_their_rowids(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_rowid_table)
    assert actual["log"] == expected["log"]
    assert (500, "explicit", -500) in actual["log"]
    assert [r for r in actual["log"] if r[1] == "dup"] == [(501, "dup", 1)]
    assert 2 not in [r[0] for r in actual["log"]]


def test_without_rowid_composite_keys(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_without_rowid)
    assert actual == expected
    assert actual["kv"] == [
        ("x", 0, "x0"),
        ("x", 1, "X1"),
        ("x", 2, "x2"),
        ("y", 0, "back"),
        ("z", 0, "z0"),
        ("z", 1, "Z1"),
        ("z", 12, "z2"),
    ]
    assert actual["single"] == [("k2", "replaced")]


def test_fk_cascade_happens_exactly_once(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_fk_cascade)
    assert actual == expected
    assert actual["parent"] == [(3, "p3"), (20, "p2")]
    assert actual["child"] == [(12, 20, "c"), (13, 3, "d")]
    # The trigger fired once per cascaded delete, in the transaction, not again at merge.
    assert actual["orphaned"] == [(1, 10, 1), (2, 11, 1)]


def test_fk_violation_raises_integrity_error_like_the_stdlib(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_fk_violation_fails_the_statement)
    assert actual == expected
    assert actual["child"] == [(1, 1), (3, 2)]


def test_trigger_audit_rows_exist_exactly_once(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_triggers)
    assert actual == expected
    assert actual["audit"] == [
        (1, 1, "ins", None, 100),
        (2, 2, "ins", None, 200),
        (3, 1, "upd", 100, 70),
        (4, 2, "upd", 200, 230),
        (5, 1, "del", 70, None),
        (6, 3, "ins", None, 0),
    ]


def test_triggers_fire_once_on_autocommit_statements_between_merges(tmp_path):
    expected, actual = run_on_both(
        tmp_path, scenario_triggers_between_merges_and_autocommit, isolation_level=None
    )
    assert actual == expected
    assert actual["audit"] == [
        (1, 1, "ins", None, 100),
        (2, 1, "upd", 100, 90),
        (3, 1, "upd", 90, 89),
        (4, 1, "upd", 89, 80),
        (5, 1, "upd", 80, 79),
        (6, 1, "upd", 79, 70),
        (7, 1, "upd", 70, 69),
        (8, 2, "ins", None, 5),
        (9, 2, "del", 5, None),
    ]


def test_autoincrement_never_reuses_ids(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_autoincrement)
    assert actual == expected
    assert [r[0] for r in actual["ticket"]] == [1, 2, 4, 51]
    assert actual["sqlite_sequence"] == [("ticket", 51)]


def test_autoincrement_id_handed_out_then_deleted_is_not_reused(tmp_path):
    expected, actual = run_on_both(
        tmp_path, scenario_autoincrement_insert_and_delete_in_one_transaction
    )
    assert expected["ticket"] == [(1, "a"), (2, "b"), (51, "after jump")]
    assert actual == expected


def test_generated_columns_are_computed(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_generated_columns)
    assert actual == expected
    assert actual["rect"] == [
        (1, 10.0, 3.0, 30.0, "r1:30.0"),
        (3, 0.5, 0.5, 0.25, "r3:0.25"),
    ]


LARGE_TEXT = "".join(chr(0x20 + (i * 7919) % 0x2FD0) for i in range(300_000))
VALUES = [
    (1, None),
    (2, b""),
    (3, b"\x00\x01\xff binary \x00"),
    (4, bytes(range(256)) * 400),
    (5, 0.1),
    (6, -0.0),
    (7, 1.7976931348623157e308),
    (8, 5e-324),
    (9, float("inf")),
    (10, 2**63 - 1),
    (11, -(2**63)),
    (12, ""),
    (13, "nul\x00inside"),
    (14, "ünïcødé ✓ 𝄞"),
    (15, LARGE_TEXT),
    (16, 3.0),
    (17, 0),
]


def scenario_values(conn):
    ddl(conn, "CREATE TABLE val(id INTEGER PRIMARY KEY, x)")
    conn.executemany("INSERT INTO val VALUES (?, ?)", VALUES)
    conn.commit()
    conn.execute("UPDATE val SET x = x WHERE id = 1")
    conn.execute("INSERT INTO val SELECT id + 100, x FROM val")
    conn.commit()


def test_values_round_trip_with_their_types(tmp_path):
    expected, actual = run_on_both(tmp_path, scenario_values)
    assert actual == expected
    rows = dict(actual["val"])
    for key, value in VALUES:
        for stored in (rows[key], rows[key + 100]):
            assert type(stored) is type(value)
            assert stored == value


def test_values_read_back_through_sqlite_concurrent(ours_factory):
    conn = ours_factory()
    conn.execute("CREATE TABLE val(id INTEGER PRIMARY KEY, x)")
    conn.executemany("INSERT INTO val VALUES (?, ?)", VALUES)
    # Read inside the transaction (own writes), then after commit (the merged database).
    in_txn = conn.execute("SELECT id, x FROM val ORDER BY id").fetchall()
    conn.commit()
    after = conn.execute("SELECT id, x FROM val ORDER BY id").fetchall()
    for got in (in_txn, after):
        assert [(k, type(v)) for k, v in got] == [(k, type(v)) for k, v in VALUES]
        assert got == VALUES
    assert conn.execute("SELECT length(x) FROM val WHERE id = 15").fetchone() == (300_000,)


def test_autocommit_scripts_match_the_stdlib(tmp_path):
    """The same scenarios with isolation_level=None (every statement commits by itself)."""
    expected, actual = run_on_both(tmp_path, scenario_triggers, isolation_level=None)
    assert actual == expected
    assert len(actual["audit"]) == 6


def test_many_small_transactions_match_the_stdlib(tmp_path):
    def script(conn):
        ddl(conn, "CREATE TABLE acc(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        conn.executemany("INSERT INTO acc VALUES (?, 0)", [(i,) for i in range(10)])
        conn.commit()
        for i in range(60):
            with conn:
                conn.execute("UPDATE acc SET n = n + ? WHERE id = ?", (i, i % 10))
                if i % 7 == 0:
                    conn.execute("DELETE FROM acc WHERE id = ?", ((i + 3) % 10,))
                    conn.execute("INSERT OR IGNORE INTO acc VALUES (?, ?)", ((i + 5) % 10, i))

    expected, actual = run_on_both(tmp_path, script)
    assert actual == expected
    assert len(actual["acc"]) >= 5


def test_file_is_a_stock_wal_database_after_use(ours, tmp_path):
    ours.execute("UPDATE t SET v = 'x'")
    ours.commit()
    ours.close()
    path = str(tmp_path / "app.db")
    check_file_health(path, wal=True)
    assert dump(path) == {"t": [(1, "x"), (2, "x")]}
