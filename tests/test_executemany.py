"""``executemany`` inside a transaction runs each parameter set once, also when the statement
has to be prepared again part way through: a statement APSW hands back from its cache was not
seen by the authorizer, and once the first set has inserted a row whose rowid may be rebased
(architecture.md, "Rowids nobody saw"), the next set needs its tables."""

from __future__ import annotations

import sqlite3

import sqlite_concurrent


def _rows(module, path):
    conn = module.connect(path)
    conn.execute("CREATE TABLE plain (v)")
    conn.execute("CREATE TABLE keyed (k TEXT PRIMARY KEY)")
    conn.commit()
    out = []
    for table in ("plain", "keyed"):  # once alone: APSW caches the statement
        out.append(conn.execute(f"INSERT INTO {table} VALUES (?)", ("a",)).rowcount)
    conn.commit()
    for table in ("plain", "keyed"):
        sets = iter([(v,) for v in "bcd"])  # an iterator: what is consumed is gone
        out.append(conn.executemany(f"INSERT INTO {table} VALUES (?)", sets).rowcount)
    conn.commit()
    out += [
        conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in ("plain", "keyed")
    ]
    conn.close()
    return out


def test_no_parameter_set_runs_twice(tmp_path):
    stdlib = _rows(sqlite3, str(tmp_path / "stdlib.db"))
    assert _rows(sqlite_concurrent, str(tmp_path / "ours.db")) == stdlib
    assert stdlib[-1] == [("a",), ("b",), ("c",), ("d",)]
