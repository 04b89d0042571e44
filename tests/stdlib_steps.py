"""Run the same steps through the stdlib ``sqlite3`` and ``sqlite_concurrent`` and compare.

A step is SQL for ``Connection.execute`` (its rows are the outcome), or SQL after a prefix:
``ids:`` (its ``rowcount`` and ``lastrowid``), ``columns:`` (its description's names and its
rows), ``script:`` (``executescript``); or one of ``commit``, ``rollback``, ``in_transaction``.
A failing step's outcome is its exception class and message.  ``{dir}`` in a step is the
directory of that module's database, so attached files are separate too, and that directory
is written ``{dir}`` in outcomes.  Databases are files: ``:memory:`` takes another path in our
module.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlite_concurrent


def outcomes(mod: Any, path: Path, steps: list[str], **kwargs: Any) -> list[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = mod.connect(str(path), **kwargs)
    where = str(path.parent)
    try:
        return [_unplaced(outcome(conn, step.replace("{dir}", where)), where) for step in steps]
    finally:
        conn.close()


def _unplaced(value: Any, where: str) -> Any:
    """``value`` with this module's directory written ``{dir}`` again, to compare."""
    if isinstance(value, str):
        return value.replace(where, "{dir}")
    if isinstance(value, (list, tuple)):
        return type(value)(_unplaced(v, where) for v in value)
    return value


def outcome(conn: Any, step: str) -> Any:
    try:
        if step == "commit":
            conn.commit()
            return "ok"
        if step == "rollback":
            conn.rollback()
            return "ok"
        if step == "in_transaction":
            return conn.in_transaction
        if step.startswith("columns:"):
            cursor = conn.execute(step[len("columns:") :])
            rows = cursor.fetchall()
            return [d[0] for d in cursor.description or ()], rows
        if step.startswith("ids:"):
            cursor = conn.execute(step[len("ids:") :])
            return cursor.rowcount, cursor.lastrowid
        if step.startswith("script:"):
            conn.executescript(step[len("script:") :])
            return "ok"
        return conn.execute(step).fetchall()
    except Exception as e:  # the outcome to compare, whatever it is
        return (type(e).__name__, str(e))


def same_as_stdlib(tmp_path: Path, steps: list[str], **kwargs: Any) -> list[Any]:
    """Run ``steps`` through both modules on fresh files; require the same outcomes."""
    expected = outcomes(sqlite3, tmp_path / "stdlib" / "app.db", steps, **kwargs)
    got = outcomes(sqlite_concurrent, tmp_path / "ours" / "app.db", steps, **kwargs)
    for step, want, have in zip(steps, expected, got, strict=True):
        assert have == want, f"{step!r}: stdlib {want!r}, ours {have!r}"
    return got
