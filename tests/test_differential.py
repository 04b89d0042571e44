"""Random sessions of statements, run through the stdlib and through ours: the same transcript.

Each seed draws one connection's session over a schema with triggers, a WITHOUT ROWID table, an
AUTOINCREMENT table with a cascading foreign key and a view: writes of every kind (REPLACE,
upserts, RETURNING, INSERT ... SELECT, DML after WITH), reads, savepoints, BEGIN, COMMIT and
ROLLBACK as statements and as methods, executemany, executescript, ``with conn``, a user
function, ``Row``, a SELECT left unfinished while others run, and statements that fail.  After
every step the transcript records what the application can see: description, rows,
``rowcount`` before and after fetching, ``lastrowid``, ``in_transaction``, ``total_changes``,
and an error's class, message and SQLite code.  The final rows of every table, and the calls
of the user function, must match too.  Run in each way a transaction of ours can run
(``mode``), at two lock levels, and under each isolation level.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(120)

SCHEMA = """
CREATE TABLE a(id INTEGER PRIMARY KEY, x INT, y TEXT UNIQUE);
CREATE TABLE b(k TEXT PRIMARY KEY, v INT) WITHOUT ROWID;
CREATE TABLE c(id INTEGER PRIMARY KEY AUTOINCREMENT, aid INT REFERENCES a(id) ON DELETE CASCADE,
               n INT DEFAULT 0);
CREATE TABLE log(msg TEXT);
CREATE TRIGGER logged_a AFTER INSERT ON a BEGIN INSERT INTO log VALUES ('a' || new.id); END;
CREATE TRIGGER logged_b AFTER UPDATE ON b BEGIN INSERT INTO log VALUES ('b' || new.k); END;
CREATE VIEW big_a AS SELECT id, x FROM a;
"""


def _statement(r: random.Random) -> tuple[str, tuple[Any, ...]]:
    i = r.randint(1, 6)
    return r.choice(
        [
            ("INSERT INTO a(x, y) VALUES (?, ?)", (r.randint(0, 9), f"y{r.randint(0, 12)}")),
            ("INSERT OR REPLACE INTO a(id, x, y) VALUES (?, ?, ?)", (i, 1, f"y{r.randint(0, 12)}")),
            ("INSERT OR IGNORE INTO a(id, x) VALUES (?, ?)", (i, r.randint(0, 9))),
            ("INSERT INTO a(id, x) VALUES (?, ?)", (i, 1)),  # may break the primary key
            ("UPDATE a SET x = x + 1 WHERE id = ?", (i,)),
            ("UPDATE a SET y = ? WHERE id = ?", (f"y{r.randint(0, 12)}", i)),
            ("UPDATE a SET x = x WHERE x < 0", ()),
            ("DELETE FROM a WHERE id = ?", (i,)),
            (
                "INSERT INTO b VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = v + excluded.v",
                (f"k{i}", r.randint(1, 5)),
            ),
            ("REPLACE INTO b VALUES (?, ?)", (f"k{i}", r.randint(0, 9))),
            ("UPDATE b SET v = v * 2 WHERE k = ?", (f"k{i}",)),
            ("DELETE FROM b WHERE v > ?", (r.randint(0, 20),)),
            ("INSERT INTO c(aid, n) VALUES (?, ?)", (i, r.randint(0, 3))),
            ("INSERT INTO c(aid) VALUES (99)", ()),  # breaks the foreign key where enforced
            ("INSERT INTO c(aid) SELECT id FROM a WHERE x > ?", (r.randint(0, 9),)),
            ("UPDATE c SET n = n + 1 WHERE aid = ? RETURNING id, n", (i,)),
            ("DELETE FROM c WHERE id = ? RETURNING aid", (r.randint(1, 10),)),
            ("WITH t(v) AS (SELECT ?) INSERT INTO a(x) SELECT v FROM t", (r.randint(0, 9),)),
            ("SELECT id, x, y FROM a ORDER BY id", ()),
            ("SELECT k, v FROM b ORDER BY k", ()),
            ("SELECT count(*), sum(n) FROM c", ()),
            ("SELECT * FROM big_a WHERE x > ? ORDER BY id", (r.randint(0, 9),)),
            ("SELECT last_insert_rowid(), changes(), total_changes()", ()),
            ("SELECT msg FROM log ORDER BY rowid DESC LIMIT 3", ()),
            ("SELECT name, seq FROM sqlite_sequence ORDER BY name", ()),
            ("SAVEPOINT sp", ()),
            ("RELEASE sp", ()),
            ("ROLLBACK TO sp", ()),
            ("BEGIN", ()),
            ("BEGIN IMMEDIATE", ()),
            ("COMMIT", ()),
            ("ROLLBACK", ()),
        ]
    )


def _error(e: Exception) -> tuple[Any, ...]:
    return ("error", type(e).__name__, str(e), getattr(e, "sqlite_errorname", None))


def _transcript(
    module: Any, path: str, seed: int, isolation_level: str | None, options: Any = None
) -> list:
    r = random.Random(seed)
    conn = module.connect(path, isolation_level=isolation_level, **(options or {}))
    out: list[Any] = []
    calls: list[Any] = []  # a user function's arguments, in the order SQLite called it

    def twice(value: Any) -> Any:
        calls.append(value)
        return None if value is None else value * 2

    try:
        conn.create_function("twice", 1, twice)
        conn.executescript(SCHEMA)
        if r.random() < 0.5:
            conn.execute("PRAGMA foreign_keys = ON")
        pending: list[Any] = []  # a SELECT left unfinished
        for step in range(60):
            try:
                out.append(_step(module, conn, r, seed, step, pending))
            except Exception as e:  # the transcript records what was raised
                out.append((*_error(e), conn.in_transaction))
        for cursor in pending:
            cursor.fetchall()
        try:
            conn.commit()
        except Exception as e:
            out.append(_error(e))
        conn.isolation_level = None
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        out.append(
            [
                conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
                for table, order in (("a", "id"), ("b", "k"), ("c", "id"), ("log", "rowid"))
            ]
        )
        out.append(calls)
    finally:
        conn.close()
    return out


def _step(
    module: Any, conn: Any, r: random.Random, seed: int, step: int, pending: list[Any]
) -> Any:
    """One step of a session, and what the application sees of it."""
    roll = r.random()
    if roll < 0.07:
        conn.commit()
        return ("commit", conn.in_transaction, conn.total_changes)
    if roll < 0.10:
        conn.rollback()
        return ("rollback", conn.in_transaction, conn.total_changes)
    if roll < 0.13:
        # Which later writes of its own connection a SELECT left unfinished sees is undefined
        # in SQLite (https://sqlite.org/isolation.html): only its first row is compared.
        pending.append(conn.execute("SELECT id, x FROM a ORDER BY id"))
        return ("open", pending[-1].fetchone())
    if roll < 0.16 and pending:
        pending.pop().fetchall()
        return ("finished",)
    if roll < 0.19:
        with conn:
            conn.execute("UPDATE a SET x = twice(x) WHERE id = ?", (r.randint(1, 6),))
            if r.random() < 0.3:
                conn.execute("INSERT INTO a(id) VALUES (1)")  # fails if there is one
        return ("with", conn.in_transaction, conn.total_changes)
    if roll < 0.21:
        conn.executescript("INSERT INTO a(x) VALUES (7); UPDATE b SET v = v + 1; SELECT 1;")
        return ("script", conn.in_transaction, conn.total_changes)
    if roll < 0.22:
        return conn.execute("SELECT 1; SELECT 2")  # refused
    if roll < 0.24:
        conn.row_factory = module.Row
        try:
            rows = conn.execute("SELECT id AS ident, x FROM a ORDER BY id").fetchall()
        finally:
            conn.row_factory = None
        return ("rows", [(tuple(row), row.keys()) for row in rows])
    sql, params = _statement(r)
    if roll < 0.29 and sql.startswith(("INSERT INTO a(x, y)", "INSERT INTO b")):
        sets = [params, _statement(random.Random(seed * 1000 + step))[1]]
        sets = [p for p in sets if len(p) == len(params)]
        cursor = conn.executemany(sql, sets)
        names = cursor.description and [d[0] for d in cursor.description]
        return ("many", sql, cursor.rowcount, names, conn.total_changes)
    cursor = conn.execute(sql, params)
    names = cursor.description and [d[0] for d in cursor.description]
    before = cursor.rowcount
    rows = cursor.fetchall()
    seen = (sql, params, names, rows, before, cursor.rowcount, cursor.lastrowid)
    return (*seen, conn.in_transaction, conn.total_changes)


@pytest.mark.parametrize("lock_level", ["row", "table"])
@pytest.mark.parametrize("mode", ["auto", "optimistic", "direct"])
@pytest.mark.parametrize("isolation_level", ["", None, "IMMEDIATE"])
def test_random_sessions_answer_as_the_stdlib(tmp_path, mode, isolation_level, lock_level):
    ours_options = {"mode": mode, "lock_level": lock_level}
    for seed in range(8):
        stock = _transcript(sqlite3, str(tmp_path / f"stock{seed}.db"), seed, isolation_level)
        ours = _transcript(
            sqlite_concurrent, str(tmp_path / f"ours{seed}.db"), seed, isolation_level, ours_options
        )
        for step, (expected, got) in enumerate(zip(stock, ours, strict=False)):
            assert got == expected, f"seed {seed}, step {step}"
        assert len(ours) == len(stock), f"seed {seed}"


@pytest.mark.parametrize("mode", ["auto", "optimistic", "direct"])
@pytest.mark.parametrize("lock_level", ["row", "table"])
def test_autocommit_executemany_keeps_the_sets_before_the_one_that_fails(
    tmp_path, mode, lock_level
):
    """With ``isolation_level=None`` the stdlib runs each parameter set as a statement of its
    own: those before a failing one stay committed; in a transaction they stay in it."""

    def run(module: Any, path: str, **options: Any) -> list:
        conn = module.connect(path, isolation_level=None, **options)
        seen: list[Any] = []
        try:
            conn.execute("CREATE TABLE t(a UNIQUE)")
            cursor = conn.cursor()
            with pytest.raises(module.IntegrityError):
                cursor.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (1,), (3,)])
            seen += [cursor.rowcount, conn.execute("SELECT a FROM t ORDER BY a").fetchall()]
            conn.isolation_level = ""
            with pytest.raises(module.IntegrityError):
                cursor.executemany("INSERT INTO t VALUES (?)", [(4,), (1,)])
            seen += [conn.in_transaction, conn.execute("SELECT a FROM t ORDER BY a").fetchall()]
            conn.rollback()
            seen.append(conn.execute("SELECT a FROM t ORDER BY a").fetchall())
        finally:
            conn.close()
        return seen

    ours = run(sqlite_concurrent, str(tmp_path / "ours.db"), mode=mode, lock_level=lock_level)
    assert ours == run(sqlite3, str(tmp_path / "stock.db"))


@pytest.mark.parametrize("mode", ["auto", "optimistic", "direct"])
@pytest.mark.parametrize("lock_level", ["row", "table"])
def test_an_autocommit_statement_that_breaks_a_deferred_foreign_key_fails_as_the_stdlibs(
    tmp_path, mode, lock_level
):
    """The violation shows only at the statement's commit: for the stdlib the statement
    failed, leaving no count or row id, and an ``executemany`` keeps the sets before the one
    that breaks it, each having been a statement of its own."""

    def run(module: Any, path: str, **options: Any) -> list:
        conn = module.connect(path, isolation_level=None, **options)
        seen: list[Any] = []
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
            conn.execute(
                "CREATE TABLE c (id INTEGER PRIMARY KEY, "
                "p INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)"
            )
            conn.execute("INSERT INTO p VALUES (1)")
            cursor = conn.execute("INSERT INTO c (p) VALUES (1)")
            for run_it in (
                lambda: cursor.execute("INSERT INTO c (p) VALUES (9)"),
                lambda: cursor.executemany(
                    "INSERT INTO c (p) VALUES (?)", [(1,), (1,), (9,), (1,)]
                ),
                lambda: cursor.executemany("INSERT INTO c (p) VALUES (?)", [(9,), (1,)]),
            ):
                with pytest.raises(module.IntegrityError) as raised:
                    run_it()
                seen += [
                    str(raised.value),
                    raised.value.sqlite_errorcode,
                    cursor.rowcount,
                    cursor.lastrowid,
                    conn.total_changes,
                    conn.in_transaction,
                    conn.execute("SELECT last_insert_rowid(), changes()").fetchall(),
                    conn.execute("SELECT * FROM c ORDER BY id").fetchall(),
                ]
            # Sets that all keep it still run as one statement each would.
            cursor.executemany("INSERT INTO c (p) VALUES (?)", [(1,), (1,)])
            seen += [
                cursor.rowcount,
                conn.total_changes,
                conn.execute("SELECT count(*) FROM c").fetchall(),
            ]
        finally:
            conn.close()
        return seen

    ours = run(sqlite_concurrent, str(tmp_path / "ours.db"), mode=mode, lock_level=lock_level)
    assert ours == run(sqlite3, str(tmp_path / "stock.db"))
