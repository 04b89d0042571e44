"""Corners of the DB-API surface that CPython's own test_sqlite3 checks, run through the stdlib
and through us with the same code: the outcome (value, or exception class and message) must be
the same.  ``where`` runs each on a private database and on a shared file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

MODULES = (sqlite3, sqlite_concurrent)


@pytest.fixture(params=["file", ":memory:"])
def where(request, tmp_path):
    return request.param


def _database(mod: Any, where: str, tmp_path: Any) -> str:
    if where != "file":
        return where
    directory = tmp_path / mod.__name__
    directory.mkdir(exist_ok=True)
    return str(directory / "app.db")


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("value", fn())
    except Exception as e:
        return ("raised", type(e).__name__, str(e))


def same(run: Callable[[Any, str], Any], where: str, tmp_path: Any) -> Any:
    """``run(module, database)`` through both modules; their outcomes, asserted equal."""
    results = []
    for mod in MODULES:
        results.append(run(mod, _database(mod, where, tmp_path)))
    assert results[1] == results[0]
    return results[0]


# -- a cursor in use refuses to be used again --------------------------------------------------


def test_a_converter_cannot_use_the_cursor_converting_its_row(where, tmp_path):
    def run(mod, db):
        out = []
        for name, use in (
            ("INIT", lambda cur, con: cur.__init__(con)),
            ("CLOSE", lambda cur, con: cur.close()),
            ("ITER", lambda cur, con: cur.fetchone()),
        ):
            con = mod.connect(db, detect_types=mod.PARSE_COLNAMES)
            cur = con.cursor()
            cur.execute("create table if not exists test(x foo)")
            cur.execute("delete from test")
            cur.executemany("insert into test(x) values (?)", [("foo",), ("bar",)])
            mod.converters[name] = lambda value, cur=cur, con=con, use=use: use(cur, con)
            try:
                cur.execute(f'select x as "x [{name}]", x from test')
                out.append(outcome(cur.fetchall))
                out.append(outcome(lambda cur=cur: cur.execute("select 1").fetchall()))
            finally:
                del mod.converters[name]
                cur.close()
                con.close()
        return out

    result = same(run, where, tmp_path)
    assert result[0] == ("raised", "ProgrammingError", "Recursive use of cursors not allowed.")
    assert result[1] == ("value", [(1,)])  # usable again afterwards


def test_a_parameter_generator_cannot_use_the_cursor_running_it(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)
        cur = con.cursor()
        cur.execute("create table a (bar)")
        cur.execute("create table b (baz)")

        def rows():
            cur.execute("insert into a (bar) values (?)", (1,))
            yield (1,)

        got = outcome(lambda: cur.executemany("insert into b (baz) values (?)", rows()))
        con.rollback()
        con.close()
        return got

    assert same(run, where, tmp_path) == (
        "raised",
        "ProgrammingError",
        "Recursive use of cursors not allowed.",
    )


def test_a_row_factory_may_use_its_cursor(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)
        con.row_factory = lambda cur, row: (cur.description[0][0], cur.rowcount, row)
        got = con.execute("select 1 as a").fetchall()
        con.close()
        return got

    assert same(run, where, tmp_path) == [("a", -1, (1,))]


# -- objects half made, closed, or faked ---------------------------------------------------------


def test_a_cursor_whose_init_did_not_run(where, tmp_path):
    def run(mod, db):
        class Cursor(mod.Cursor):
            def __init__(self, con):
                pass

        con = mod.connect(db)
        cur = Cursor(con)
        got = [outcome(lambda: cur.execute("select 4+5")), outcome(cur.close)]
        con.close()
        return got

    assert same(run, where, tmp_path) == [
        ("raised", "ProgrammingError", "Base Cursor.__init__ not called."),
        ("raised", "ProgrammingError", "Base Cursor.__init__ not called."),
    ]


def test_closing_a_cursor_of_a_closed_connection(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)
        cur = con.cursor()
        con.close()
        return outcome(cur.close)

    assert same(run, where, tmp_path) == (
        "raised",
        "ProgrammingError",
        "Cannot operate on a closed database.",
    )


def test_an_uninitialised_connection_refuses_everything():
    def run(mod, db):
        cx = mod.Connection.__new__(mod.Connection)
        return [
            outcome(f)
            for f in (
                lambda: cx.isolation_level,
                lambda: setattr(cx, "isolation_level", None),
                lambda: cx.total_changes,
                lambda: cx.in_transaction,
                lambda: cx.iterdump(),
                lambda: cx.cursor(),
                lambda: cx.close(),
                lambda: cx.execute("select 1"),
                lambda: cx(),
            )
        ]

    results = [run(mod, "") for mod in MODULES]
    assert results[1] == results[0]
    uninitialised = ("raised", "ProgrammingError", "Base Connection.__init__ not called.")
    assert set(results[0]) == {uninitialised}


def test_calling_a_connection(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)
        got = [outcome(lambda a=a, k=k: con(*a, **k)) for a, k in _CALLS]
        got.append(outcome(lambda: type(con("select 1")).__name__))
        con.close()
        got.append(outcome(con))
        return got

    result = same(run, where, tmp_path)
    assert result[-1] == ("raised", "ProgrammingError", "Cannot operate on a closed database.")


_CALLS = [((), {}), ((1,), {}), (("a", "b"), {}), ((), {"sql": "select 1"})]


def test_init_again_on_an_open_connection(where, tmp_path):
    """A failed second ``__init__`` leaves it uninitialised; cursors of the first database
    go on reading it."""

    def run(mod, db):
        cx = mod.connect(db)
        cx.execute("create table t(x)")
        cx.executemany("insert into t values (?)", [(1,), (2,), (3,)])
        cx.commit()
        cur = cx.execute("select x from t order by x")
        first = cur.fetchone()
        # Ours goes on to say the path is a directory.
        out = [outcome(lambda: cx.__init__(str(tmp_path)))[:2]]
        out.append(outcome(lambda: cx.execute("select 1")))
        cx.__init__(":memory:")
        out.append(outcome(lambda: cx.execute("select count(*) from sqlite_schema").fetchall()))
        out.append((first, outcome(cur.fetchall)))
        cx.close()
        return out

    result = same(run, where, tmp_path)
    assert result[0] == ("raised", "OperationalError")
    assert result[1] == ("raised", "ProgrammingError", "Base Connection.__init__ not called.")
    assert result[2] == ("value", [(0,)])
    assert result[3] == ((1,), ("value", [(2,), (3,)]))


def test_row_and_cursor_factories_check_the_real_type(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)

        class FakeCursor(str):
            __class__ = mod.Cursor

        cur = con.cursor()
        got = [
            outcome(lambda: con.cursor(FakeCursor)),
            outcome(lambda: mod.Row(FakeCursor(), ())),
            outcome(lambda: mod.Row(cur, [1])),
            outcome(lambda: mod.Row(cur)),
            outcome(lambda: mod.Row(cur, (1,), x=1)),
            outcome(lambda: tuple(mod.Row(cur, (1,)))),
        ]
        con.close()
        # Our message names our Cursor class; the rest is the stdlib's.
        return [
            (r[0], r[1], r[2].replace("sqlite_concurrent.Cursor", "sqlite3.Cursor"))
            if r[0] == "raised"
            else r
            for r in got
        ]

    result = same(run, where, tmp_path)
    assert [r[1] for r in result[:5]] == ["TypeError"] * 5


def test_a_closed_blob_refuses_its_context_manager(where, tmp_path):
    def run(mod, db):
        cx = mod.connect(db)
        cx.execute("create table test(b blob)")
        cx.execute("insert into test values (zeroblob(10))")
        cx.commit()
        blob = cx.blobopen("test", "b", 1)
        blob.close()
        got = [
            outcome(blob.close),
            outcome(blob.__enter__),
            outcome(lambda: blob.__exit__(None, None, None)),
        ]
        cx.close()
        return got

    assert same(run, where, tmp_path) == [
        ("value", None),
        ("raised", "ProgrammingError", "Cannot operate on a closed blob."),
        ("raised", "ProgrammingError", "Cannot operate on a closed blob."),
    ]


@pytest.mark.parametrize("isolation_level", ["", None], ids=["deferred", "autocommit"])
@pytest.mark.parametrize("first", ["read", "index", "write"])
def test_a_blob_whose_row_changed_fails(where, tmp_path, isolation_level, first):
    """SQLite expires the handle: the next read or write fails, and the blob is empty after."""

    def run(mod, db):
        cx = mod.connect(db, isolation_level=isolation_level)
        cx.execute("create table test(b blob)")
        cx.execute("insert into test(b) values (?)", (b"x" * 50,))
        cx.commit()
        blob = cx.blobopen("test", "b", 1)
        blob.write(b"abc")  # its own write does not expire it
        got = [outcome(lambda: blob[0:5])]
        cx.execute("update test set b = 'aaaa' where rowid = 1")
        calls = {"read": blob.read, "index": lambda: blob[0], "write": lambda: blob.write(b"a")}
        got.append(outcome(calls[first]))
        # Not read() again: the stdlib's then fails with SystemError (a negative length).
        for f in (lambda: blob[0], lambda: blob.write(b"a"), lambda: len(blob)):
            got.append(outcome(f))
        got.append(outcome(blob.tell))
        blob.close()
        cx.rollback()
        cx.close()
        return got

    result = same(run, where, tmp_path)
    assert result[:2] == [("value", b"abcxx"), ("raised", "OperationalError", "query aborted")]


# -- adaptation --------------------------------------------------------------------------------


def test_parameters_are_read_and_adapted_one_by_one(where, tmp_path):
    def run(mod, db):
        class X:
            def __conform__(self, protocol):
                parameters.clear()
                return "..."

        parameters = [X(), 0]
        con = mod.connect(db)
        con.execute("create table foo(bar, baz)")
        got = outcome(lambda: con.execute("insert into foo values (?, ?)", parameters))
        con.rollback()
        con.close()
        return got

    assert same(run, where, tmp_path) == ("raised", "IndexError", "list index out of range")


def test_a_type_error_in_conform_means_cannot_adapt(where, tmp_path):
    def run(mod, db):
        class BadConform:
            def __init__(self, exc):
                self.exc = exc

            def __conform__(self, protocol):
                raise self.exc

        con = mod.connect(db)
        con.execute("create table test(bad)")
        got = []
        for params in ((BadConform(TypeError),), {"val": BadConform(TypeError)}):
            sql = (
                "insert into test values (?)"
                if isinstance(params, tuple)
                else ("insert into test values (:val)")
            )
            try:
                con.execute(sql, params)
                got.append("no error")
            except mod.ProgrammingError:
                got.append("ProgrammingError")
        with pytest.raises(KeyboardInterrupt):
            con.execute("insert into test values (?)", (BadConform(KeyboardInterrupt),))
        con.rollback()
        con.close()
        return got

    assert same(run, where, tmp_path) == ["ProgrammingError", "ProgrammingError"]


def test_a_parameter_of_a_type_sqlite_cannot_store(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)
        con.execute("create table t(a, b)")
        got = [
            outcome(lambda: con.execute("select ?, ?", (1, object()))),
            outcome(lambda: con.execute("select :a, :b", {"a": 1, "b": [1]})),
            outcome(lambda: con.execute("insert into t values (?2, ?1)", (1, {}))),
            outcome(lambda: con.executemany("insert into t values (?, ?)", [(1, 2), (3, {})])),
        ]
        con.rollback()
        con.close()
        return got

    result = same(run, where, tmp_path)
    assert result[0] == ("raised", "ProgrammingError", _UNSUPPORTED.format(2, "object"))


_UNSUPPORTED = "Error binding parameter {}: type '{}' is not supported"


def test_adapt_asks_the_protocol_first():
    def run(mod):
        class CustomProto:
            def __adapt__(self):
                return "adapted"

        class Refuses:
            def __adapt__(self):
                raise TypeError("no")

        class Conforms:
            def __conform__(self, proto):
                return "conformed"

        return [
            outcome(lambda: mod.adapt(1.0, CustomProto)),
            outcome(lambda: mod.adapt(1.0, Refuses, "alt")),
            outcome(lambda: mod.adapt(Conforms(), Refuses)),
            outcome(lambda: mod.adapt(1.0, Refuses)),
        ]

    results = [run(mod) for mod in MODULES]
    assert results[1] == results[0]
    assert results[0][0] == ("value", "adapted")


# -- text and paths that are not UTF-8 ----------------------------------------------------------


def test_text_that_is_not_utf8_names_its_column(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)
        con.execute("create table t(a)")
        got = [
            outcome(
                lambda: con.execute(
                    "select 'xxx' || ? || 'yyy' colname", (bytes([250]),)
                ).fetchone()
            ),
            outcome(
                lambda: con.execute(
                    "insert into t select 'xxx' || ? || 'yyy' returning a", (bytes([250]),)
                ).fetchall()
            ),
        ]
        con.rollback()
        con.close()
        return got

    text = "Could not decode to UTF-8 column '{}' with text 'xxx\ufffdyyy'"
    assert same(run, where, tmp_path) == [
        ("raised", "OperationalError", text.format("colname")),
        ("raised", "OperationalError", text.format("a")),
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="needs a filesystem taking any bytes")
@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "uri"])
@pytest.mark.usefixtures("optimistic")  # the other process writes while our transaction is open
def test_a_path_that_is_not_utf8(tmp_path, as_uri):
    def run(mod, directory):
        path = os.path.join(directory, os.fsdecode(b"db\xe7w\xf0"))
        name = "file:" + urllib.parse.quote(os.fsencode(path)) if as_uri else path
        with contextlib.closing(mod.connect(name, uri=as_uri)) as cx:
            cx.execute("create table t(x)")
            cx.execute("insert into t values (1)")
            cx.commit()
            with contextlib.closing(mod.connect(name, uri=as_uri)) as other:
                other.execute("insert into t values (2)")
                other.commit()
            # Another process writes; ours lets it while this connection's transaction is
            # open, the stdlib's only after.
            if mod is sqlite_concurrent:
                cx.execute("insert into t values (3)")
            subprocess.run(
                [sys.executable, "-c", _CHILD, mod.__name__, os.fsencode(name), str(as_uri)],
                check=True,
                timeout=60,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            if mod is sqlite3:
                cx.execute("insert into t values (3)")
            cx.commit()
            cx.execute("update t set x = x * 10")
            cx.commit()
            rows = cx.execute("select x from t order by x").fetchall()
        return rows, os.path.exists(path)

    results = []
    for mod in MODULES:
        directory = tmp_path / mod.__name__
        directory.mkdir()
        results.append(run(mod, str(directory)))
    assert results[1] == results[0] == ([(10,), (20,), (30,), (40,)], True)


_CHILD = """
import contextlib, importlib, os, sys
mod = importlib.import_module(sys.argv[1])
name = os.fsdecode(sys.argv[2].encode(errors="surrogateescape"))
with contextlib.closing(mod.connect(name, uri=sys.argv[3] == "True", timeout=30)) as cx:
    cx.execute("insert into t values (4)")
    cx.commit()
"""


# -- the trace callback --------------------------------------------------------------------------


def _traced_session(mod: Any, db: str) -> list[str]:
    out: list[str] = []
    con = mod.connect(db)
    con.set_trace_callback(out.append)
    con.execute("create table t(x)")
    con.execute("create table log(y)")
    con.execute("create trigger tr after insert on t begin insert into log values (new.x); end")
    con.execute("insert into t values (?)", (1,))
    con.execute("select * from t").fetchall()
    con.commit()
    con.commit()
    con.executemany("insert into t values (?)", [(2,), (3,)])
    con.rollback()
    con.rollback()
    with con:
        con.execute("update t set x = 5")
    con.execute("begin")
    con.execute("insert into t values (9)")
    con.execute("commit")
    con.executescript("insert into t values (10); select 1; ")
    con.execute("insert into t values (11)")
    con.executescript("select 2")
    con.isolation_level = None
    con.execute("insert into t values (12)")
    con.execute("savepoint a")
    con.execute("insert into t values (13)")
    con.execute("release a")
    con.isolation_level = "IMMEDIATE"
    con.execute("delete from t where x = 1")
    con.isolation_level = None
    con.execute("insert into t values (14)")
    con.close()
    return out


def test_the_trace_shows_what_the_stdlib_sends(where, tmp_path):
    """The application's statements, the stdlib's implicit BEGIN, COMMIT and ROLLBACK, each
    trigger program as SQLite reports it; none of the SQL we send to merge or pin."""
    traced = same(_traced_session, where, tmp_path)
    assert traced[3:5] == ["BEGIN ", "insert into t values (1)"]


def test_a_trace_past_the_length_limit_shows_the_statement_as_written(where, tmp_path):
    def run(mod, db):
        con = mod.connect(db)
        con.setlimit(mod.SQLITE_LIMIT_LENGTH, 1000)
        traced: list[str] = []
        con.set_trace_callback(traced.append)
        seen: list[Any] = []
        hook, sys.unraisablehook = sys.unraisablehook, seen.append
        mod.enable_callback_tracebacks(True)
        try:
            rows = con.execute("select length(?)", ("a" * 1000,)).fetchall()
        finally:
            mod.enable_callback_tracebacks(False)
            sys.unraisablehook = hook
        con.close()
        return rows, traced, [(u.exc_type.__name__, str(u.exc_value)) for u in seen]

    assert same(run, where, tmp_path) == (
        [(1000,)],
        ["select length(?)"],
        [("DataError", "Expanded SQL string exceeds the maximum string length")],
    )


# -- backup ----------------------------------------------------------------------------------


def test_backup_of_an_attached_memory_database_and_of_temp(where, tmp_path):
    def run(mod, db):
        cx = mod.connect(db)
        cx.execute("ATTACH DATABASE ':memory:' AS attached_db")
        cx.execute("CREATE TABLE attached_db.foo (key INTEGER)")
        cx.executemany("INSERT INTO attached_db.foo (key) VALUES (?)", [(3,), (4,)])
        cx.execute("CREATE TEMP TABLE scratch (n)")
        cx.execute("INSERT INTO scratch VALUES (7)")
        cx.commit()
        got = []
        for name, table in (("attached_db", "foo"), ("temp", "scratch")):
            with contextlib.closing(mod.connect(":memory:")) as bck:
                cx.backup(bck, name=name)
                got.append(bck.execute(f"SELECT * FROM {table}").fetchall())
        cx.close()
        return got

    assert same(run, where, tmp_path) == [[(3,), (4,)], [(7,)]]
