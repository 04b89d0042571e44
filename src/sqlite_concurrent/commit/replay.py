"""Applying a small changeset as plain statements, where that means what ``Changeset.apply``
means (architecture.md, "Changesets"); and how a changeset numbers a table's columns
(``TableShape``, with which the merge also reads the snapshot rows a transaction updates).

Measured (SQLite 3.54): ``Changeset.apply`` of a one-row changeset costs 26-60 us, because the
session module prepares its statements afresh on every call, and it makes the next statement on
the connection (the commit marker) about 23 us slower as well.  The same change through cached
statements costs 2-3 us.  Big changesets still go to ``Changeset.apply``, whose per-row cost in
C beats a Python loop.

Plain statements are used only where they cannot behave differently from the session's apply:
- foreign keys enforced on a table that has or is the target of one: the apply defers the
  checks to the end and treats every action as NO ACTION;
- a table with an ``ON CONFLICT`` clause: a REPLACE or IGNORE there changes what a failing
  statement does, and the session module's handling of that is not reproduced here.
Conflicts map as the apply's do: an UPDATE or DELETE that finds the row changed is ``data``,
missing ``notfound``; an INSERT whose key exists is ``conflict``; other constraint failures are
``constraint``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import apsw

from ..errors import ConflictError
from ..identifiers import quote

SMALL = 8192  # changeset bytes up to which statements beat the session's apply

_NO_CHANGE = apsw.no_change


def conjunction(terms: Sequence[str]) -> str:
    """``terms`` joined by AND, nested in balanced parentheses past a few dozen: SQLite parses
    a flat chain of n ANDs into an expression tree n deep and refuses one deeper than
    SQLITE_MAX_EXPR_DEPTH (1000), which a wide table's whole-row match would pass."""
    if len(terms) <= 64:
        return " AND ".join(terms)
    half = len(terms) // 2
    return f"({conjunction(terms[:half])}) AND ({conjunction(terms[half:])})"


class TableShape:
    """A table's columns as a changeset numbers them, and a SELECT of them by primary key."""

    def __init__(self, conn: apsw.Connection, table: str, column_count: int, pk: Sequence[int]):
        cols = [
            r[1]
            for r in conn.execute(f"PRAGMA main.table_xinfo({quote(table)})")
            if r[6] == 0  # hidden 0: ordinary column; generated columns are not in changesets
        ]
        if column_count == len(cols) + 1:  # no declared primary key: recorded by rowid
            cols = ["_rowid_", *cols]
        self.name = table
        self.usable = len(cols) == column_count
        self.pk = list(pk)
        self.quoted = [c if c == "_rowid_" else quote(c) for c in cols]
        self.target = f"main.{quote(table)}"
        self.where_key = conjunction([f"{self.quoted[i]} IS ?" for i in self.pk])
        self.sql = f"SELECT {', '.join(self.quoted)} FROM {self.target} WHERE {self.where_key}"


class _Table(TableShape):
    """A table's shape and the statements that apply changes to it."""

    def __init__(self, conn: apsw.Connection, name: str, column_count: int, pk: list[int]):
        super().__init__(conn, name, column_count, pk)
        self.exists = f"SELECT 1 FROM {self.target} WHERE {self.where_key}"
        self.insert = (
            f"INSERT INTO {self.target}({', '.join(self.quoted)}) "
            f"VALUES ({', '.join('?' * len(self.quoted))})"
        )
        self.delete = f"DELETE FROM {self.target} WHERE " + conjunction(
            [f"{c} IS ?" for c in self.quoted]
        )
        self.rest = [i for i in range(len(self.quoted)) if i not in pk]
        self._updates: dict[tuple[tuple[int, ...], bool], str] = {}

    def update(self, changed: tuple[int, ...], whole: bool) -> str:
        """Setting the ``changed`` columns where the row is as the transaction saw it.

        Not ``whole``, as the session's apply matches: the key and the changed columns' old
        values.  ``whole``: the whole snapshot row, key columns as the key compares them (so the
        primary key's index serves), the rest byte for byte, BINARY whatever the column's
        collation, as a NOCASE column changed from 'a' to 'A' was changed.
        """
        sql = self._updates.get((changed, whole))
        if sql is None:
            sets = ", ".join(f"{self.quoted[i]} = ?" for i in changed)
            where = [f"{self.quoted[i]} IS ?" for i in self.pk]
            if whole:
                where += [f"{self.quoted[i]} IS ? COLLATE BINARY" for i in self.rest]
            else:
                where += [f"{self.quoted[i]} IS ?" for i in changed]
            sql = f"UPDATE {self.target} SET {sets} WHERE {conjunction(where)}"
            self._updates[(changed, whole)] = sql
        return sql


class _Schema:
    """What one connection knows about its schema, valid for one schema cookie."""

    def __init__(self, conn: apsw.Connection, cookie: int) -> None:
        self.cookie = cookie
        self.tables: dict[tuple[str, int, tuple[int, ...]], _Table] = {}
        # Tables the session's apply must handle: see the module docstring.
        self.with_clauses = {
            name
            for name, sql in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type='table'")
            if sql and "CONFLICT" in sql.upper()
        }
        self.with_keys: set[str] = set()
        for child, parent in conn.execute(
            'SELECT m.name, f."table" FROM sqlite_schema AS m, '
            "pragma_foreign_key_list(m.name) AS f WHERE m.type = 'table'"
        ):
            self.with_keys.update((child, parent))


_schemas: weakref.WeakKeyDictionary[apsw.Connection, _Schema] = weakref.WeakKeyDictionary()


def _schema(conn: apsw.Connection, cookie: int) -> _Schema:
    schema = _schemas.get(conn)
    if schema is None or schema.cookie != cookie:
        schema = _schemas[conn] = _Schema(conn, cookie)
    return schema


class Change(NamedTuple):
    """One change of a changeset, copied out of the iterator (whose objects die with it).
    The attribute names are ``apsw.TableChange``'s, so one ``keep`` filter serves both."""

    name: str
    opcode: int
    column_count: int
    pk_columns: frozenset[int]
    old: tuple[Any, ...] | None
    new: tuple[Any, ...] | None

    @classmethod
    def of(cls, c: apsw.TableChange) -> Change:
        return cls(c.name, c.opcode, c.column_count, frozenset(c.pk_columns), c.old, c.new)


# Snapshot rows of the rows a transaction updates, by table and key (see ``run``).
Rows = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


def plan(
    conn: apsw.Connection,
    changeset: bytes,
    *,
    cookie: int,
    foreign_keys: bool,
    changes: list[Change] | None = None,
    known_only: bool = False,
    only: frozenset[str] | None = None,
) -> list[tuple[_Table, Change]] | None:
    """The changes of ``changeset`` (already copied out: ``changes``) with their tables, or
    ``None`` when it must go to ``Changeset.apply`` instead (see the module docstring).

    ``known_only``: plan only from what ``conn`` already knows of schema ``cookie`` (``None``
    otherwise), reading nothing; so it may run before the merge lock, outside a transaction.
    ``only``: plan the changes to these tables alone, whatever their size and shape: changes
    that ``Changeset.apply`` cannot apply (:mod:`.rowid_keys`).
    """
    if only is None and len(changeset) > SMALL:
        return None
    if known_only:
        known = _schemas.get(conn)
        if known is None or known.cookie != cookie:
            return None
        schema = known
    else:
        schema = _schema(conn, cookie)
    planned = []
    if changes is None:
        changes = [Change.of(c) for c in apsw.Changeset.iter(changeset)]
    for c in changes:
        if only is not None and c.name not in only:
            continue
        key = (c.name, c.column_count, tuple(sorted(c.pk_columns)))
        table = schema.tables.get(key)
        if table is None:
            if known_only:
                return None
            table = _Table(conn, c.name, c.column_count, list(key[2]))
            schema.tables[key] = table
        if only is not None:
            if not table.usable:
                raise apsw.SchemaChangeError(f"table {c.name!r} no longer has the changed columns")
        elif (
            not table.usable
            or table.name in schema.with_clauses
            or (foreign_keys and table.name in schema.with_keys)
        ):
            return None
        planned.append((table, c))
    return planned


class Step(NamedTuple):
    """One planned change as the statement that applies it.  Built from the transaction alone
    (``steps``), so the merge can build them before it takes the merge lock."""

    table: _Table
    change: Change
    sql: str | None  # None: an updated row the snapshot did not have (a ``data`` conflict)
    params: Sequence[Any]
    key: tuple[Any, ...] | None  # of an UPDATE or DELETE


def steps(planned: list[tuple[_Table, Change]], rows: Rows | None) -> list[Step]:
    """The statement and parameters of each planned change.

    With ``rows``, the whole snapshot row of every updated row, an UPDATE matches the row only
    if every column is still as the snapshot saw it (compared exactly, whatever the column's
    collation): snapshot isolation's check and the apply in one statement.
    """
    out = []
    for table, change in planned:
        op, old, new = change.opcode, change.old, change.new
        if op == apsw.SQLITE_INSERT:
            assert new is not None
            out.append(Step(table, change, table.insert, new, None))
            continue
        assert old is not None
        # List comprehensions, not generators: merges build many of these.
        key = tuple([old[i] for i in table.pk])
        if op == apsw.SQLITE_DELETE:
            out.append(Step(table, change, table.delete, old, key))
            continue
        assert new is not None
        changed = tuple([i for i, v in enumerate(new) if v is not _NO_CHANGE])
        params = [new[i] for i in changed]
        if rows is None:
            params += [old[i] for i in (*table.pk, *changed)]
            out.append(Step(table, change, table.update(changed, False), params, key))
            continue
        snapshot_row = rows.get(table.name, {}).get(key)
        if snapshot_row is None:  # not read at the snapshot: nothing to compare with
            out.append(Step(table, change, None, (), key))
            continue
        params += [snapshot_row[i] for i in table.pk]
        params += [snapshot_row[i] for i in table.rest]
        out.append(Step(table, change, table.update(changed, True), params, key))
    return out


def run(
    conn: apsw.Connection,
    planned: list[Step],
    *,
    keep: Callable[[Change], bool] | None,
    conflict: Callable[[str | None, tuple[Any, ...] | None, str], ConflictError],
) -> None:
    """Apply planned changes (``steps``) with cached statements inside the caller's
    transaction.  ``keep`` may hold a change back (the caller then deals with it).

    :raises ConflictError: the first change that could not be applied; the caller rolls back
        what was applied before it.
    """
    # As the session's apply does, a change failing a constraint other than its key waits
    # until the others are in (a changeset is not in statement order: a row that takes over a
    # UNIQUE value may come before the deletion of the row that held it), and is retried
    # while retrying makes progress.
    deferred = []
    for step in planned:
        if keep is not None and not keep(step.change):
            continue
        if not _apply(conn, step, conflict):
            deferred.append(step)
    while deferred:
        left = [d for d in deferred if not _apply(conn, d, conflict)]
        if len(left) == len(deferred):
            table, change = left[0].table, left[0].change
            values = change.old if change.old is not None else change.new
            assert values is not None
            raise conflict(table.name, tuple(values[i] for i in table.pk), "constraint")
        deferred = left


def _apply(
    conn: apsw.Connection,
    step: Step,
    conflict: Callable[[str | None, tuple[Any, ...] | None, str], ConflictError],
) -> bool:
    """Apply one change; ``False`` if it failed a constraint other than its key's."""
    table, key = step.table, step.key
    if step.sql is None:
        raise conflict(table.name, key, "data")
    if key is None:  # an INSERT
        try:
            conn.execute(step.sql, step.params)
        except apsw.ConstraintError:
            new = step.change.new
            assert new is not None
            key = tuple(new[i] for i in table.pk)
            if conn.execute(table.exists, key).fetchone() is not None:
                raise conflict(table.name, key, "conflict") from None
            return False
        return True
    try:
        conn.execute(step.sql, step.params)
    except apsw.ConstraintError:
        return False
    if conn.changes() == 0:
        found = conn.execute(table.exists, key).fetchone() is not None
        raise conflict(table.name, key, "data" if found else "notfound")
    return True
