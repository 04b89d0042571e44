"""Corners of the DB-API surface that CPython's own test_sqlite3 checks, run through the stdlib
and through us with the same code: the outcome (value, or exception class and message) must be
the same.  ``where`` runs each on a private database and on a shared file.
"""

from __future__ import annotations

import sqlite3
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
