"""Shared-cache memory URIs (``file:NAME?mode=memory&cache=shared``), against the stdlib's.

Connections of one process that open the same NAME share one database, in one thread or
several; other names, ``:memory:`` and memory URIs without shared cache stay private; the
database lives while one connection to it is open.  Each scenario runs through both modules and
must give the same outcome.  Every name is new to the process (memory databases are
process-wide), and every connection is closed explicitly: a stdlib connection left to the
garbage collector keeps its database alive until it is collected.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

MODULES = [sqlite3, sqlite_concurrent]
LOCK_ERRORS = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # primary result codes
WAIT = 30  # seconds any event or join may take before the test fails rather than hangs


def _name() -> str:
    return f"shared_{uuid.uuid4().hex}"


def _uri(name: str) -> str:
    return f"file:{name}?mode=memory&cache=shared"


def _connect(mod: Any, uri: str, **kwargs: Any) -> Any:
    return mod.connect(uri, uri=True, **kwargs)


def _tables(conn: Any) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]


def _same(scenario: Callable[[Any], Any]) -> Any:
    """The scenario's outcome through each module; the two must be equal."""
    ours = scenario(sqlite_concurrent)
    theirs = scenario(sqlite3)
    assert ours == theirs
    return theirs


def _in_thread(fn: Callable[[], Any]) -> threading.Thread:
    """Run ``fn`` in a thread; its exception, if any, fails the test at ``_join``."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.failure = failure  # type: ignore[attr-defined]
    thread.start()
    return thread


def _join(thread: threading.Thread) -> None:
    thread.join(WAIT)
    assert not thread.is_alive(), "thread did not finish"
    if thread.failure:  # type: ignore[attr-defined]
        raise thread.failure[0]  # type: ignore[attr-defined]


def test_two_connections_in_one_thread_share_the_database():
    def scenario(mod):
        uri = _uri(_name())
        a, b = _connect(mod, uri), _connect(mod, uri)
        a.execute("CREATE TABLE t (x)")
        a.execute("INSERT INTO t VALUES (1)")
        a.commit()
        seen_by_b = b.execute("SELECT x FROM t").fetchall()
        cur = b.execute("INSERT INTO t VALUES (2)")
        rowid = cur.lastrowid
        b.commit()
        seen_by_a = a.execute("SELECT rowid, x FROM t").fetchall()
        a.close()
        b.close()
        return seen_by_b, rowid, seen_by_a

    assert _same(scenario) == ([(1,)], 2, [(1, 1), (2, 2)])


def test_connections_in_other_threads_share_the_database():
    def scenario(mod):
        uri = _uri(_name())
        main = _connect(mod, uri)
        main.execute("CREATE TABLE t (x)")
        main.commit()
        opened, written, read = threading.Event(), threading.Event(), threading.Event()
        seen = []

        def other():
            conn = _connect(mod, uri)  # its own connection, used in its own thread only
            opened.set()
            assert written.wait(WAIT)
            seen.append(conn.execute("SELECT x FROM t").fetchall())
            conn.execute("INSERT INTO t VALUES ('from the thread')")
            conn.commit()
            conn.close()
            read.set()

        thread = _in_thread(other)
        assert opened.wait(WAIT)
        main.execute("INSERT INTO t VALUES ('from main')")
        main.commit()
        written.set()
        assert read.wait(WAIT)
        _join(thread)
        rows = main.execute("SELECT x FROM t ORDER BY rowid").fetchall()
        main.close()
        return seen, rows

    assert _same(scenario) == (
        [[("from main",)]],
        [("from main",), ("from the thread",)],
    )


def test_one_connection_shared_by_threads_and_new_ones_see_it():
    """Django's in-memory test database: one connection with ``check_same_thread=False``
    used from a server thread, and fresh connections to the same name."""

    def scenario(mod):
        uri = _uri(_name())
        conn = _connect(mod, uri, check_same_thread=False)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        seen = []

        def other():
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()
            fresh = _connect(mod, uri)
            seen.append(fresh.execute("SELECT x FROM t").fetchall())
            fresh.close()

        _join(_in_thread(other))
        conn.close()
        return seen

    assert _same(scenario) == [[(1,)]]


def test_names_name_different_databases():
    def scenario(mod):
        first, second = _name(), _name()
        a = _connect(mod, _uri(first))
        a.execute("CREATE TABLE t (x)")
        a.commit()
        others = [
            _connect(mod, _uri(second)),
            _connect(mod, f"file:/{first}?mode=memory&cache=shared"),  # a name of its own
            _connect(mod, f"file:{first}?mode=memory"),  # no shared cache: private
        ]
        same = [
            _connect(mod, f"file:{first}?cache=shared&mode=memory"),
            _connect(mod, f"file:%73{first[1:]}?mode=memory&cache=shared"),  # "s" encoded
        ]
        outcome = ([_tables(c) for c in others], [_tables(c) for c in same])
        for c in [a, *others, *same]:
            c.close()
        return outcome

    assert _same(scenario) == ([[], [], []], [["t"], ["t"]])


def test_database_lives_while_a_connection_is_open():
    def scenario(mod):
        uri = _uri(_name())
        a = _connect(mod, uri)
        a.execute("CREATE TABLE t (x)")
        a.execute("INSERT INTO t VALUES (1)")
        a.commit()
        b = _connect(mod, uri)
        a.close()
        after_first_closed = b.execute("SELECT x FROM t").fetchall()
        b.close()
        c = _connect(mod, uri)
        after_all_closed = _tables(c)
        c.close()
        return after_first_closed, after_all_closed

    assert _same(scenario) == ([(1,)], [])


def test_memory_name_with_shared_cache_is_one_database_per_process():
    def scenario(mod):
        gc.collect()  # a stdlib connection some other test dropped unclosed would keep it
        a = _connect(mod, "file::memory:?cache=shared")
        empty_at_first = _tables(a)
        a.execute("CREATE TABLE t (x)")
        a.commit()
        b = _connect(mod, "file::memory:?cache=shared")
        c = _connect(mod, "file::memory:?mode=memory&cache=shared")
        named = _connect(mod, _uri(_name()))
        outcome = [empty_at_first, _tables(b), _tables(c), _tables(named)]
        for conn in (a, b, c, named):
            conn.close()
        d = _connect(mod, "file::memory:?cache=shared")
        outcome.append(_tables(d))
        d.close()
        return outcome

    assert _same(scenario) == [[], ["t"], ["t"], [], []]


@pytest.mark.parametrize(
    "private",
    [
        ":memory:",
        "file::memory:",
        "file:?cache=shared",  # a temporary database: never shared
        "file:{name}?mode=memory",
        "file:{name}?mode=memory&cache=private",
        "file:{name}?mode=memory&cache=shared&cache=private",  # the last one counts
    ],
)
def test_memory_databases_without_shared_cache_stay_private(private):
    def scenario(mod):
        name = _name()
        shared = _connect(mod, _uri(name))
        shared.execute("CREATE TABLE t (x)")
        shared.commit()
        uri = private.format(name=name)
        p = _connect(mod, uri)
        p.execute("CREATE TABLE mine (x)")
        p.commit()
        again = _connect(mod, uri)
        second = _connect(mod, _uri(name))
        outcome = [_tables(p), _tables(again), _tables(second)]
        for conn in (shared, p, again, second):
            conn.close()
        return outcome

    assert _same(scenario) == [["mine"], [], ["t"]]


def test_backup_into_a_shared_memory_database():
    """Django's parallel test runner clones an in-memory test database this way."""

    def scenario(mod):
        source = mod.connect(":memory:")
        source.execute("CREATE TABLE t (x)")
        source.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        source.commit()
        uri = _uri(_name())
        target = _connect(mod, uri)
        source.backup(target)
        other = _connect(mod, uri)
        rows = other.execute("SELECT x FROM t").fetchall()
        for conn in (source, target, other):
            conn.close()
        return rows

    assert _same(scenario) == [(1,), (2,)]


def test_two_writer_threads_lose_nothing():
    """Two threads commit rows in turn as fast as they can.  The stdlib's shared cache raises
    "database table is locked" in some interleavings (the writer retries); ours waits for the
    other writer within ``timeout``.  Every row must be there, in both."""
    rows_each = 200

    def scenario(mod):
        uri = _uri(_name())
        keeper = _connect(mod, uri)
        keeper.execute("CREATE TABLE t (who TEXT, i INTEGER)")
        keeper.commit()
        start = threading.Event()
        retries: dict[str, int] = {}

        def writer(who):
            conn = _connect(mod, uri, timeout=WAIT)
            assert start.wait(WAIT)
            retries[who] = 0
            for i in range(rows_each):
                while True:
                    try:
                        conn.execute("INSERT INTO t VALUES (?, ?)", (who, i))
                        conn.commit()
                        break
                    except mod.OperationalError as e:
                        if e.sqlite_errorcode & 0xFF not in LOCK_ERRORS:
                            raise
                        retries[who] += 1
                        conn.rollback()
            conn.close()

        threads = [_in_thread(lambda w=w: writer(w)) for w in ("a", "b")]
        start.set()
        for thread in threads:
            _join(thread)
        rows = keeper.execute("SELECT who, count(*), sum(i) FROM t GROUP BY who").fetchall()
        keeper.close()
        if mod is sqlite_concurrent:
            assert retries == {"a": 0, "b": 0}
        return rows

    total = rows_each * (rows_each - 1) // 2
    assert _same(scenario) == [("a", rows_each, total), ("b", rows_each, total)]


def test_a_writer_in_another_thread_waits_for_the_open_transaction():
    """Where the stdlib's shared cache refuses at once ("database table is locked"), ours
    waits within ``timeout`` for the other connection's transaction to end, as separate
    connections to a file do (README, "Limits")."""
    uri = _uri(_name())
    a = _connect(sqlite_concurrent, uri)
    a.execute("CREATE TABLE t (x)")
    a.commit()
    a.execute("INSERT INTO t VALUES ('a')")  # a's write transaction is open
    trying = threading.Event()

    def writer():
        b = _connect(sqlite_concurrent, uri, timeout=WAIT)
        trying.set()
        b.execute("INSERT INTO t VALUES ('b')")
        b.commit()
        b.close()

    thread = _in_thread(writer)
    assert trying.wait(WAIT)
    a.commit()
    _join(thread)
    assert a.execute("SELECT x FROM t ORDER BY x").fetchall() == [("a",), ("b",)]
    a.close()


def test_a_reader_is_refused_under_an_open_write_transaction():
    """Both refuse a read of a table another connection is writing: the stdlib at once
    ("database table is locked: t"), ours after ``timeout`` ("database is locked")."""

    def scenario(mod):
        uri = _uri(_name())
        a = _connect(mod, uri)
        a.execute("CREATE TABLE t (x)")
        a.commit()
        ready, written, tried, committed = (threading.Event() for _ in range(4))
        seen = []

        def reader():
            b = _connect(mod, uri, timeout=0.05)
            seen.append(b.execute("SELECT x FROM t").fetchall())
            ready.set()
            assert written.wait(WAIT)
            try:
                seen.append(b.execute("SELECT x FROM t").fetchall())
            except mod.OperationalError:
                seen.append("OperationalError")
            tried.set()
            assert committed.wait(WAIT)
            seen.append(b.execute("SELECT x FROM t").fetchall())
            b.close()

        thread = _in_thread(reader)
        assert ready.wait(WAIT)
        a.execute("INSERT INTO t VALUES (1)")  # a's write transaction is open
        written.set()
        assert tried.wait(WAIT)
        a.commit()
        committed.set()
        _join(thread)
        a.close()
        return seen

    assert _same(scenario) == [[], "OperationalError", [(1,)]]
