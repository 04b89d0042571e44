"""The rest of the stdlib ``sqlite3`` surface, run against both modules.

Like test_dbapi: every test runs once per module through ``mod``, and the expected values are
what the stdlib produces.  Differences on purpose are in tests named ``test_ours_*``.
"""

from __future__ import annotations

import datetime
import sqlite3

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[sqlite3, sqlite_concurrent], ids=["sqlite3", "sqlite_concurrent"])
def mod(request):
    saved = dict(request.param.adapters), dict(request.param.converters)
    yield request.param
    # Registries are module-global: leave them as found.
    request.param.adapters.clear()
    request.param.adapters.update(saved[0])
    request.param.converters.clear()
    request.param.converters.update(saved[1])


@pytest.fixture(params=["file", ":memory:", ""])
def where(request, tmp_path):
    """A database file shared by processes, or one only this connection sees."""
    return str(tmp_path / "app.db") if request.param == "file" else request.param


@pytest.fixture
def opened():
    conns = []
    yield conns
    for c in reversed(conns):
        c.close()


def _connect(mod, opened, *args, **kwargs):
    conn = mod.connect(*args, **kwargs)
    opened.append(conn)
    return conn


def test_module_surface(mod):
    for name in (
        "register_adapter",
        "register_converter",
        "adapt",
        "adapters",
        "converters",
        "PrepareProtocol",
        "complete_statement",
        "enable_callback_tracebacks",
        "sqlite_version",
        "sqlite_version_info",
        "SQLITE_DENY",
        "SQLITE_OK",
        "SQLITE_IGNORE",
        "Row",
        "Binary",
    ):
        assert hasattr(mod, name), name
    assert mod.complete_statement("SELECT 1;")
    assert not mod.complete_statement("SELECT 1")
    assert mod.SQLITE_DENY == sqlite3.SQLITE_DENY


def test_private_and_shared_databases_behave_alike(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    conn.execute("INSERT INTO t(v) VALUES ('a')")
    assert conn.in_transaction
    cur = conn.execute("INSERT INTO t(v) VALUES ('b')")
    assert cur.lastrowid == 2 and cur.rowcount == 1
    conn.rollback()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with conn:
        conn.execute("INSERT INTO t(v) VALUES ('c')")
    assert conn.execute("SELECT v FROM t").fetchall() == [("c",)]
    with pytest.raises(mod.IntegrityError):
        conn.execute("INSERT INTO t(id, v) VALUES (1, 'dup')")
    with pytest.raises(sqlite3.IntegrityError):  # the stdlib's handlers catch ours
        conn.execute("INSERT INTO t(id, v) VALUES (1, 'dup')")
    conn.rollback()
    conn.row_factory = mod.Row
    row = conn.execute("SELECT id, v FROM t").fetchone()
    assert row["v"] == "c" and tuple(row) == (1, "c")


def test_memory_databases_are_separate(mod, opened):
    a = _connect(mod, opened, ":memory:")
    b = _connect(mod, opened, ":memory:")
    a.execute("CREATE TABLE t(x)")
    assert b.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_uri_memory_and_read_only(mod, opened, tmp_path):
    mem = _connect(mod, opened, "file::memory:", uri=True)
    mem.execute("CREATE TABLE t(x)")
    path = str(tmp_path / "ro.db")
    rw = _connect(mod, opened, f"file:{path}?mode=rwc", uri=True)
    rw.execute("CREATE TABLE t(x)")
    rw.execute("INSERT INTO t VALUES (1)")
    rw.commit()
    ro = _connect(mod, opened, f"file:{path}?mode=ro", uri=True)
    assert ro.execute("SELECT x FROM t").fetchall() == [(1,)]
    with pytest.raises(mod.OperationalError):
        ro.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(mod.OperationalError):
        mod.connect(f"file:{tmp_path / 'missing.db'}?mode=rw", uri=True)


def test_connect_takes_the_stdlib_arguments_by_position(mod, opened, tmp_path):
    conn = _connect(mod, opened, str(tmp_path / "p.db"), 5.0, mod.PARSE_DECLTYPES, None)
    assert conn.isolation_level is None


def test_factory_makes_a_subclass(mod, opened, where):
    class Mine(mod.Connection):
        pass

    conn = _connect(mod, opened, where, factory=Mine)
    assert isinstance(conn, Mine)
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_execute_makes_a_plain_cursor_even_when_cursor_is_overridden(mod, opened, where):
    class MyCursor(mod.Cursor):
        pass

    class Mine(mod.Connection):
        def cursor(self, factory=MyCursor):
            return super().cursor(factory)

    conn = _connect(mod, opened, where, factory=Mine)
    assert type(conn.cursor()) is MyCursor
    cur = conn.execute("SELECT 1")
    assert type(cur) is mod.Cursor and cur.fetchone() == (1,)
    conn.execute("CREATE TABLE t(x)")
    assert type(conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])) is mod.Cursor
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    assert type(conn.executescript("SELECT 1;")) is mod.Cursor


def test_isolation_level_is_validated_and_none_commits(mod, opened, where):
    conn = _connect(mod, opened, where)
    with pytest.raises(ValueError):
        conn.isolation_level = "BOGUS"
    conn.isolation_level = "immediate"
    assert conn.isolation_level == "IMMEDIATE"
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    conn.isolation_level = None
    assert not conn.in_transaction
    conn.rollback()
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def test_adapters_and_converters(mod, opened, where):
    mod.register_adapter(Point, lambda p: f"{p.x};{p.y}")
    mod.register_converter("point", lambda b: Point(*map(float, b.split(b";"))))
    conn = _connect(mod, opened, where, detect_types=mod.PARSE_DECLTYPES | mod.PARSE_COLNAMES)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, p point, d date, ts timestamp, n)")
    conn.execute(
        "INSERT INTO t(p, d, ts, n) VALUES (?, ?, ?, ?)",
        (Point(1, 2), datetime.date(2024, 5, 6), datetime.datetime(2024, 5, 6, 7, 8, 9), 7),
    )
    conn.commit()
    p, d, ts, n = conn.execute("SELECT p, d, ts, n FROM t").fetchone()
    assert (p.x, p.y) == (1.0, 2.0)
    assert d == datetime.date(2024, 5, 6)
    assert ts == datetime.datetime(2024, 5, 6, 7, 8, 9)
    assert n == 7
    cur = conn.execute("SELECT '3;4' AS \"q [point]\", n AS plain FROM t")
    assert [c[0] for c in cur.description] == ["q", "plain"]
    converted, plain = cur.fetchone()
    assert (converted.x, converted.y) == (3.0, 4.0) and plain == 7
    assert conn.execute('SELECT NULL AS "x [point]"').fetchone() == (None,)


def test_no_detect_types_means_no_conversion(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.execute("CREATE TABLE t(d date)")
    conn.execute("INSERT INTO t VALUES ('2024-05-06')")
    assert conn.execute('SELECT d, d AS "d [date]" FROM t').fetchone() == (
        "2024-05-06",
        "2024-05-06",
    )
    assert conn.execute('SELECT d AS "d [date]" FROM t').description[0][0] == "d [date]"


def test_conform_protocol_and_adapt(mod):
    class Money:
        def __conform__(self, protocol):
            if protocol is mod.PrepareProtocol:
                return "1.00 EUR"

    assert mod.adapt(Money()) == "1.00 EUR"
    assert mod.adapt(object(), mod.PrepareProtocol, "alt") == "alt"
    with pytest.raises(mod.ProgrammingError):
        mod.adapt(object())


def test_unsupported_parameter_type_is_programming_error(mod, opened, where):
    conn = _connect(mod, opened, where)
    with pytest.raises(mod.ProgrammingError):
        conn.execute("SELECT ?", (object(),))


def test_trace_callback_hears_the_applications_statements(mod, opened, where):
    conn = _connect(mod, opened, where, isolation_level=None)
    heard = []
    conn.set_trace_callback(heard.append)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (?)", (42,))
    conn.execute("SELECT x FROM t").fetchall()
    conn.set_trace_callback(None)
    conn.execute("SELECT 'unheard'").fetchall()
    mine = [s for s in heard if s.split()[0] in ("CREATE", "INSERT", "SELECT") and "t" in s]
    assert mine[0] == "CREATE TABLE t(x)"
    assert "INSERT INTO t VALUES (42)" in mine
    assert mine[-1] == "SELECT x FROM t"
    assert not any("unheard" in s for s in heard)


def test_trace_callback_errors_do_not_fail_statements(mod, opened, where):
    conn = _connect(mod, opened, where)

    def broken(sql):
        raise RuntimeError("oops")

    conn.set_trace_callback(broken)
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_iterdump(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.executescript(
        """
        CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
        CREATE INDEX t_v ON t(v);
        INSERT INTO t(v) VALUES ('it''s'), (NULL);
        CREATE VIEW w AS SELECT v FROM t;
        """
    )
    dump = list(conn.iterdump())
    assert dump[0] == "BEGIN TRANSACTION;" and dump[-1] == "COMMIT;"
    assert "INSERT INTO \"t\" VALUES(1,'it''s');" in dump
    assert not any("_sqlite_concurrent" in line for line in dump)
    copy = _connect(mod, opened, ":memory:")
    copy.executescript("\n".join(dump))
    assert copy.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, "it's"), (2, None)]
    assert copy.execute("SELECT count(*) FROM w").fetchone() == (2,)


def test_backup_into_memory_with_progress(mod, opened, where):
    src = _connect(mod, opened, where)
    src.execute("CREATE TABLE t(x)")
    src.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)])
    src.commit()
    for make_target in (
        lambda: _connect(sqlite3, opened, ":memory:"),
        lambda: _connect(mod, opened, ":memory:"),
    ):
        target = make_target()
        steps = []
        src.backup(
            target,
            pages=1,
            progress=lambda status, remaining, total, steps=steps: steps.append(
                (status, remaining, total)
            ),
        )
        assert target.execute("SELECT count(*), sum(x) FROM t").fetchone() == (500, sum(range(500)))
        assert len(steps) > 1 and steps[-1][1] == 0
    with pytest.raises(TypeError):
        src.backup(object())


def test_ours_backup_into_a_shared_database_is_an_exclusive_operation(tmp_path):
    src = sqlite_concurrent.connect(str(tmp_path / "src.db"))
    src.execute("CREATE TABLE t(x)")
    src.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    src.commit()
    dst = sqlite_concurrent.connect(str(tmp_path / "dst.db"))
    dst.execute("CREATE TABLE old(y)")
    dst.execute("INSERT INTO old VALUES (1)")
    dst.commit()
    src.backup(dst)
    assert dst.execute("SELECT count(*) FROM t").fetchone() == (100,)
    assert dst.execute("SELECT name FROM sqlite_schema WHERE name = 'old'").fetchall() == []
    assert dst.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # The copy's commit markers are not this database's: writing goes on normally.
    dst.execute("INSERT INTO t VALUES (1000)")
    dst.commit()
    assert dst.execute("SELECT count(*) FROM t").fetchone() == (101,)
    dst.execute("INSERT INTO t VALUES (1001)")
    with pytest.raises(sqlite_concurrent.OperationalError, match="target is in transaction"):
        src.backup(dst)
    dst.rollback()
    src.close()
    dst.close()


def test_authorizer_denies_and_ignores(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.executescript("CREATE TABLE t(a, secret); INSERT INTO t VALUES (1, 'x');")

    def authorize(action, arg1, arg2, dbname, source):
        if action == mod.SQLITE_READ and arg2 == "secret":
            return mod.SQLITE_IGNORE
        if action == mod.SQLITE_DELETE:
            return mod.SQLITE_DENY
        return mod.SQLITE_OK

    conn.set_authorizer(authorize)
    assert conn.execute("SELECT a, secret FROM t").fetchall() == [(1, None)]
    with pytest.raises(mod.DatabaseError, match="not authorized"):
        conn.execute("DELETE FROM t")
    conn.set_authorizer(None)
    assert conn.execute("SELECT secret FROM t").fetchall() == [("x",)]
    conn.execute("DELETE FROM t")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_authorizer_hears_nothing_of_the_commit_machinery(mod, opened, where):
    # Our commit takes a changeset, whose session runs statements of its own on the
    # transaction connection; the stdlib runs none, so the application's authorizer must
    # not hear of them.
    conn = _connect(mod, opened, where)
    conn.executescript("CREATE TABLE t(id INTEGER PRIMARY KEY, a); INSERT INTO t VALUES (1, 1);")
    heard = []

    def authorize(action, arg1, arg2, dbname, source):
        heard.append((action, arg1, arg2))
        return mod.SQLITE_OK

    conn.set_authorizer(authorize)
    conn.execute("UPDATE t SET a = 2 WHERE id = 1")
    heard.clear()
    conn.commit()
    assert not [h for h in heard if "changeset" in h or "table_xinfo" in h or h[1] == "t"]
    conn.set_authorizer(None)
    assert conn.execute("SELECT a FROM t").fetchall() == [(2,)]


def test_progress_handler_aborts_a_statement(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.set_progress_handler(lambda: 1, 1)
    query = "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k) SELECT max(i) FROM k"
    with pytest.raises(mod.OperationalError, match="interrupted"):
        conn.execute(query).fetchall()
    conn.set_progress_handler(None, 1)
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_window_function(mod, opened, where):
    class WindowSum:
        def __init__(self):
            self.total = 0

        def step(self, value):
            self.total += value

        def inverse(self, value):
            self.total -= value

        def value(self):
            return self.total

        def finalize(self):
            return self.total

    conn = _connect(mod, opened, where)
    conn.create_window_function("wsum", 1, WindowSum)
    rows = conn.execute(
        "SELECT x, wsum(x) OVER (ORDER BY x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) "
        "FROM (SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3)"
    ).fetchall()
    assert rows == [(1, 1), (2, 3), (3, 5)]


def test_user_function_errors_are_operational_errors(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.create_function("boom", 0, lambda: 1 / 0)
    with pytest.raises(mod.OperationalError, match="user-defined function raised exception"):
        conn.execute("SELECT boom()").fetchall()

    class NoRows:
        def step(self, v):
            pass

        def finalize(self):
            return 42

    conn.create_aggregate("norows", 1, NoRows)
    assert conn.execute("SELECT norows(1) WHERE 0").fetchone() == (None,)


def test_limits(mod, opened, where):
    conn = _connect(mod, opened, where)
    category = mod.SQLITE_LIMIT_SQL_LENGTH
    old = conn.getlimit(category)
    assert conn.setlimit(category, 100) == old
    assert conn.getlimit(category) == 100
    with pytest.raises(mod.DataError, match="query string is too large"):
        conn.execute("SELECT 1 " + " " * 200)
    with pytest.raises(mod.ProgrammingError):
        conn.getlimit(1111)


def test_cursor_executescript_runs_selects_to_the_end(mod, opened, where):
    conn = _connect(mod, opened, where)
    seen = []
    conn.create_function("seen", 1, seen.append)
    cur = conn.cursor()
    assert (
        cur.executescript(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3); SELECT seen(x) FROM t;"
        )
        is cur
    )
    assert sorted(seen) == [1, 2, 3]


def test_blob_io(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.execute("CREATE TABLE t(b BLOB)")
    conn.execute("INSERT INTO t VALUES (zeroblob(10))")
    conn.commit()
    with conn.blobopen("t", "b", 1) as blob:
        assert len(blob) == 10
        blob.write(b"hello")
        assert blob.tell() == 5
        blob.seek(0)
        assert blob.read(5) == b"hello"
        blob[9] = ord("!")
        assert blob[5:10] == b"\0\0\0\0!"
    conn.commit()
    assert conn.execute("SELECT b FROM t").fetchone() == (b"hello\0\0\0\0!",)
    with conn.blobopen("t", "b", 1, readonly=True) as blob, pytest.raises(mod.OperationalError):
        blob.write(b"x")
    with pytest.raises(mod.OperationalError, match="no such"):
        conn.blobopen("t", "b", 99)


def test_read_after_own_commit_sees_it_while_a_select_is_unfinished(mod, opened, where):
    conn = _connect(mod, opened, where)
    conn.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
    unfinished = conn.execute("SELECT x FROM t")
    assert unfinished.fetchone() == (1,)
    conn.execute("DELETE FROM t")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    unfinished.close()  # what it yields now differs: the stdlib's reads ahead one row


def _two_on_a_blob_table(tmp_path):
    """Two of our connections on a shared file with ``t(id, b BLOB, n)`` holding row 1."""
    path = str(tmp_path / "app.db")
    conn = sqlite_concurrent.connect(path)
    other = sqlite_concurrent.connect(path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB, n INT)")
    conn.execute("INSERT INTO t VALUES (1, zeroblob(4), 0)")
    conn.commit()
    return conn, other


def test_ours_blob_write_inside_a_transaction_commits_with_it(tmp_path):
    """A shared database: a blob write joins the open transaction, is invisible to others
    until commit, and conflicts like any write to that row."""
    conn, other = _two_on_a_blob_table(tmp_path)
    conn.execute("BEGIN")
    with conn.blobopen("t", "b", 1) as blob:
        blob.write(b"abcd")
    assert other.execute("SELECT b FROM t").fetchone() == (b"\0\0\0\0",)
    conn.commit()
    assert other.execute("SELECT b FROM t").fetchone() == (b"abcd",)
    # Two writers of the same blob: the second to commit conflicts.
    conn.execute("BEGIN")
    other.execute("BEGIN")
    conn.blobopen("t", "b", 1).write(b"1111")
    other.blobopen("t", "b", 1).write(b"2222")
    conn.commit()
    with pytest.raises(sqlite_concurrent.ConflictError):
        other.commit()
    assert other.execute("SELECT b FROM t").fetchone() == (b"1111",)
    conn.close()
    other.close()


def test_ours_blob_write_first_after_a_schema_change_commits_with_the_transaction(tmp_path):
    """After another connection changes the schema, the transaction connection is replaced
    when the next transaction pins its snapshot, before anything of it runs: a blob write that
    comes first is then part of the transaction, not lost with the old connection."""
    conn, other = _two_on_a_blob_table(tmp_path)
    with conn:
        conn.execute("BEGIN")
        conn.execute("UPDATE t SET n = 1 WHERE id = 1")  # the transaction connection serves
    other.execute("ALTER TABLE t ADD COLUMN extra")
    other.commit()
    conn.execute("BEGIN")
    with conn.blobopen("t", "b", 1) as blob:
        blob.write(b"abcd")
    conn.execute("UPDATE t SET n = 2 WHERE id = 1")
    assert [d[0] for d in conn.execute("SELECT * FROM t").description] == ["id", "b", "n", "extra"]
    conn.commit()
    assert other.execute("SELECT b, n FROM t").fetchone() == (b"abcd", 2)
    conn.close()
    other.close()


def test_any_sequence_binds_by_position(mod, opened, where):
    class Seq:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return ["x", "y"][i]

    conn = _connect(mod, opened, where)
    assert conn.execute("SELECT ?, ?", Seq()).fetchone() == ("x", "y")
    assert conn.execute("SELECT ?", "a").fetchone() == ("a",)  # a str is a sequence too
    assert conn.execute("SELECT ?, ?", [1, 2]).fetchone() == (1, 2)
    with pytest.raises(mod.ProgrammingError, match="unsupported type"):
        conn.execute("SELECT ?", 42)


def _after_a_prefixed_statement(module, path: str, sql: str) -> dict:
    """Run ``sql`` (a statement behind empty statements, a BOM or a comment), then an insert and
    a rollback: what the transaction state and the rows say."""
    conn = module.connect(path)
    seen: dict = {}
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        try:
            conn.execute(sql)
        except module.Error as e:
            seen["error"] = (type(e).__name__, str(e))
        seen["in_transaction"] = conn.in_transaction
        conn.execute("INSERT INTO t VALUES (2)")
        seen["after_insert"] = conn.in_transaction
        conn.rollback()
        seen["rows"] = conn.execute("SELECT id FROM t ORDER BY id").fetchall()
        seen["tables"] = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()
    return seen


@pytest.mark.parametrize(
    "sql",
    [
        "; begin",
        "\ufeffbegin",
        ";; BEGIN IMMEDIATE",
        "\ufeff-- a comment\n; begin",
        "; savepoint a",
        "; commit",
        "; insert into t values (3)",
        "\ufeffinsert into t values (3)",
        "; create table u(x)",
        "; pragma user_version = 7",
    ],
)
def test_statements_behind_empty_statements_as_in_the_stdlib(tmp_path, sql):
    """SQLite passes over empty statements and a byte order mark before a statement, so
    ``"; BEGIN"`` opens a transaction; the stdlib judges its implicit BEGIN by the first keyword
    after whitespace and comments only, so ``"; INSERT ..."`` commits at once."""
    stdlib = _after_a_prefixed_statement(sqlite3, str(tmp_path / "stdlib.db"), sql)
    ours = _after_a_prefixed_statement(sqlite_concurrent, str(tmp_path / "ours.db"), sql)
    assert ours == stdlib
