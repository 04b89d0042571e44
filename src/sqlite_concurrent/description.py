"""A statement's columns (``cursor.description``) as the stdlib reads them: after its first step.

SQLite compiles a statement against the schema the connection last loaded.  A statement from a
connection's statement cache whose schema has changed since (a column added, a table dropped and
created again, by this connection or another) is compiled again by its first step, and only then
has its new columns.  APSW keeps the description it first gives out for the rest of an
execution, so the one the exec trace reads before stepping (:func:`pre_step`) comes from
``get_description``, which APSW caches apart from ``description``.

A transaction's connection needs none of this: it is a new connection for each schema.
"""

from __future__ import annotations

import contextlib
from typing import Any

import apsw

from .engine.authorizer import Denied

_KEEP = 4096  # statements remembered per connection


def pre_step(acur: apsw.Cursor) -> Any:
    return acur.get_description()


class _Compiled:
    """Which statements in one connection's cache were compiled for the schema it has now.

    The schema cookie is read again only when the database changed (its data version, a file
    control that runs no statement): a schema change changes the file.
    """

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn
        self._version: int | None = None
        self._cookie: int | None = None
        self._current: set[str] = set()

    def confirm(self, sql: str) -> None:
        if len(self._current) >= _KEEP:
            self._current.clear()
        self._current.add(sql)

    def current(self, sql: str) -> bool:
        version = self._conn.data_version()
        if version != self._version:
            self._version = version
            row = self._conn.execute("PRAGMA schema_version").fetchone()
            cookie = row[0] if row else None
            if cookie != self._cookie:
                self._cookie = cookie
                self._current.clear()
        return sql in self._current


class Columns:
    """The columns of statements run on a connection's stock connections."""

    def __init__(self, denied: Denied) -> None:
        self._denied = denied  # our statements are not the application's to vet
        self._compiled: dict[apsw.Connection, _Compiled] = {}

    def after_step(
        self,
        acur: apsw.Cursor,
        conn: apsw.Connection,
        sql: str,
        parameters: Any,
        before: Any,
    ) -> Any:
        """The columns once ``acur`` ran its first step (from the statement cache), given those
        it had ``before`` it."""
        if not before:
            return before  # no columns (DML): compiling again cannot give it any
        compiled = self._compiled.get(conn)
        if compiled is None:
            compiled = self._compiled[conn] = _Compiled(conn)
        try:
            found = acur.description  # a row is waiting: as compiled for it
        except apsw.ExecutionCompleteError:
            found = None
        if found is None:
            with self._denied.muting():
                if compiled.current(sql):
                    return before
                found = _cached_columns(conn, sql, parameters, before)
        compiled.confirm(sql)
        return found


def _cached_columns(conn: apsw.Connection, sql: str, parameters: Any, before: Any) -> Any:
    """The columns of the cached statement for ``sql``, compiled again by the step that found
    no rows if it had to be; asked without stepping it."""
    found: list[Any] = []

    def first(cur: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
        found.append(cur.description)
        return False

    again = conn.cursor()
    again.exec_trace = first
    with contextlib.suppress(apsw.ExecTraceAbort):
        again.execute(sql, parameters)
    return found[0] if found else before
