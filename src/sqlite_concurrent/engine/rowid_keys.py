"""Rowid tables whose declared PRIMARY KEY is not the rowid: their changes keyed by rowid.

SQLite's session extension records a table with a declared PRIMARY KEY by that key.  For a
rowid table whose key is not an INTEGER PRIMARY KEY (a TEXT or composite key, ``INTEGER
PRIMARY KEY DESC``) that loses two things the stdlib keeps (sessionintro.html, "Limitations";
sqlite3session.c ``sessionPreupdateOneChange``):
- the rowid: applying the changeset assigns fresh ones, so rowids the application saw change
  (and rows come back from a table scan in another order);
- rows with a NULL in a key column, which SQLite allows in such tables for legacy reasons: the
  session does not record them at all.

So a transaction's changes to these tables are rebuilt by rowid: every rowid it touched, the
row as the snapshot had it against the row as the transaction left it.  The touched rowids come
from the update hook, plus the rows it does not report: rows deleted by REPLACE conflict
resolution and the old rowid of a row whose rowid changed (lang_createtable.html#rowid, the
update hook's documentation).  Those had a key that a row the transaction wrote also has, so
they are found by looking the transaction's keys up in the snapshot: the session's records (by
primary key) and every other UNIQUE key of each touched row.

The rebuilt changes number columns as a table without a declared key is recorded: the rowid
first, as its only key column.  ``Changeset.apply`` refuses that shape for a table that declares
a key ("primary key mismatch"), so the merge applies them as statements (``replay``).
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Iterable
from typing import Any

import apsw

from ..commit.replay import conjunction
from ..identifiers import quote

ROWID = "_rowid_"

_INT = struct.Struct(">q")
_REAL = struct.Struct(">d")
_NO_CHANGE = apsw.no_change


class KeyedTable:
    """One such table: its columns as a changeset numbers them, and its unique keys."""

    def __init__(self, conn: apsw.Connection, name: str) -> None:
        self.name = name
        target = f"main.{quote(name)}"
        self.columns = [
            r[1]
            for r in conn.execute("SELECT * FROM pragma_table_xinfo(?, 'main')", (name,))
            if r[6] == 0  # generated columns are not in changesets
        ]
        position = {c: i for i, c in enumerate(self.columns)}
        # A column named ``_rowid_`` hides the rowid from the merge's statements: such a table
        # stays with the session's record by key.
        self.addressable = ROWID not in {c.lower() for c in self.columns}
        cols = ", ".join(quote(c) for c in self.columns)
        self.select = f"SELECT {cols} FROM {target} WHERE {ROWID} = ?"
        # Each unique key: its columns' positions and the lookup of a row by it.
        self.keys: list[tuple[list[int], str]] = []
        self.primary: tuple[list[int], str] | None = None
        for _, index, unique, origin, _partial in conn.execute(
            "SELECT * FROM pragma_index_list(?, 'main')", (name,)
        ):
            if not unique:
                continue
            parts = [
                (r[1], r[2], r[4])  # cid, name, collation
                for r in conn.execute("SELECT * FROM pragma_index_xinfo(?, 'main')", (index,))
                if r[5]  # key columns, not the rowid the index stores
            ]
            if any(cid < 0 for cid, _, _ in parts):
                continue  # an expression: no row of ours can be looked up by it here
            where = conjunction([f"{quote(n)} = ? COLLATE {quote(coll)}" for _, n, coll in parts])
            key = (
                [position[n] for _, n, _ in parts],
                f"SELECT {ROWID} FROM {target} WHERE {where}",
            )
            if origin == "pk":
                self.primary = key
            else:
                self.keys.append(key)


_tables: weakref.WeakKeyDictionary[apsw.Connection, tuple[int, dict[str, KeyedTable]]] = (
    weakref.WeakKeyDictionary()
)


def tables(conn: apsw.Connection, cookie: int) -> dict[str, KeyedTable]:
    """The main database's rowid tables with a declared key that is not the rowid, for schema
    ``cookie``, read through ``conn`` (once per connection and schema)."""
    known = _tables.get(conn)
    if known is not None and known[0] == cookie:
        return known[1]
    found = {
        table.name: table
        for table in (
            KeyedTable(conn, name)
            for (name,) in conn.execute(
                # Qualified throughout: an unqualified look-up reads every attached schema too,
                # and the read lock it takes would keep the application from detaching one.
                "SELECT m.name FROM main.sqlite_schema AS m WHERE m.type = 'table' AND EXISTS "
                "(SELECT 1 FROM pragma_index_list(m.name, 'main') AS i WHERE i.origin = 'pk')"
            )
            if _has_rowid(conn, name)
        )
        if table.addressable
    }
    _tables[conn] = (cookie, found)
    return found


def _has_rowid(conn: apsw.Connection, table: str) -> bool:
    """Whether ``table`` is a rowid table: its key index then stores the rowid after the key
    (cid -1), where a WITHOUT ROWID table's stores its other columns."""
    return (
        conn.execute(
            "SELECT 1 FROM pragma_index_list(?, 'main') AS i, pragma_index_xinfo(i.name, 'main') "
            "AS x WHERE i.origin = 'pk' AND x.key = 0 AND x.cid = -1",
            (table,),
        ).fetchone()
        is not None
    )


def rekey(
    changeset: bytes,
    touched: dict[str, set[int]],
    keyed: dict[str, KeyedTable],
    *,
    txn_conn: apsw.Connection,
    snapshot_conn: apsw.Connection,
) -> tuple[bytes, dict[str, set[int]]]:
    """``changeset`` with the changes to ``keyed`` tables rebuilt by rowid (module docstring),
    and every rowid of theirs the transaction touched, displaced rows included.

    ``touched``: rowids the update hook reported, per keyed table; ``txn_conn`` still has the
    transaction open and ``snapshot_conn`` its snapshot.
    """
    others = apsw.ChangesetBuilder()
    rowids = {name: set(ids) for name, ids in touched.items()}
    for change in apsw.Changeset.iter(changeset):
        table = keyed.get(change.name)
        if table is None:
            others.add_change(change)
            continue
        ids = rowids.setdefault(change.name, set())
        primary = table.primary
        assert primary is not None
        positions, sql = primary
        row = change.old if change.old is not None else change.new
        key = [row[i] for i in positions]
        if change.old is not None:
            ids.update(r[0] for r in snapshot_conn.execute(sql, key))
        if change.new is not None:
            ids.update(r[0] for r in txn_conn.execute(sql, key))
    out = bytearray(others.output())
    for name in sorted(rowids):
        _encode_table(out, keyed[name], rowids[name], txn_conn, snapshot_conn)
    return bytes(out), rowids


def _encode_table(
    out: bytearray,
    table: KeyedTable,
    rowids: set[int],
    txn_conn: apsw.Connection,
    snapshot_conn: apsw.Connection,
) -> None:
    new_rows = {r: txn_conn.execute(table.select, (r,)).fetchone() for r in rowids}
    # Rows that a row the transaction wrote displaced: by REPLACE, or by taking a new rowid.
    assert table.primary is not None
    for positions, sql in (table.primary, *table.keys):
        for row in new_rows.values():
            if row is None:
                continue
            key = [row[i] for i in positions]
            if None not in key:
                rowids.update(r[0] for r in snapshot_conn.execute(sql, key))
    changes = []
    for rowid in sorted(rowids):
        old = snapshot_conn.execute(table.select, (rowid,)).fetchone()
        new = (
            new_rows[rowid]
            if rowid in new_rows
            else txn_conn.execute(table.select, (rowid,)).fetchone()
        )
        if (old is None and new is None) or _same(old, new):
            continue
        changes.append((rowid, old, new))
    if not changes:
        return
    # Table header (sqlite3session.h, "changeset format"): 'T', the column count, one
    # primary-key flag a column, the name and a NUL.  The rowid is column 0, the only key.
    out += b"T"
    _put_varint(out, len(table.columns) + 1)
    out += b"\x01" + b"\x00" * len(table.columns)
    out += table.name.encode("utf-8", "surrogatepass") + b"\x00"
    for rowid, old, new in changes:
        if old is None:
            out += bytes((apsw.SQLITE_INSERT, 0))
            _put_record(out, (rowid, *new))
        elif new is None:
            out += bytes((apsw.SQLITE_DELETE, 0))
            _put_record(out, (rowid, *old))
        else:
            # The old record is whole (the snapshot's row, as the merge's row check wants);
            # the new one holds the changed columns only, the key undefined.
            out += bytes((apsw.SQLITE_UPDATE, 0))
            _put_record(out, (rowid, *old))
            _put_record(
                out,
                (
                    _NO_CHANGE,
                    *(
                        n if not _same_value(o, n) else _NO_CHANGE
                        for o, n in zip(old, new, strict=True)
                    ),
                ),
            )


def _same_value(a: Any, b: Any) -> bool:
    # 1 and 1.0 are equal in Python and different values in SQLite.
    return type(a) is type(b) and a == b


def _same(old: Iterable[Any] | None, new: Iterable[Any] | None) -> bool:
    if old is None or new is None:
        return False
    return all(_same_value(a, b) for a, b in zip(old, new, strict=True))


def _put_varint(out: bytearray, n: int) -> None:
    """SQLite's varint (fileformat2.html, "varint"); changeset lengths are never negative."""
    if n <= 0x7F:
        out.append(n)
        return
    if n > 0x00FFFFFFFFFFFFFF:
        low = n & 0xFF
        n >>= 8
        groups = [(n >> (7 * i)) & 0x7F for i in range(8)]
        out += bytes(g | 0x80 for g in reversed(groups)) + bytes((low,))
        return
    groups = []
    while n:
        groups.append(n & 0x7F)
        n >>= 7
    out += bytes(g | 0x80 for g in reversed(groups[1:])) + bytes((groups[0],))


def _put_record(out: bytearray, values: Iterable[Any]) -> None:
    """Values as a changeset stores them (sqlite3session.h): a type byte, then the value."""
    for v in values:
        if v is _NO_CHANGE:
            out.append(0)
        elif v is None:
            out.append(5)
        elif isinstance(v, int):
            out.append(1)
            out += _INT.pack(v)
        elif isinstance(v, float):
            out.append(2)
            out += _REAL.pack(v)
        elif isinstance(v, str):
            data = v.encode("utf-8", "surrogatepass")
            out.append(3)
            _put_varint(out, len(data))
            out += data
        else:
            data = bytes(v)
            out.append(4)
            _put_varint(out, len(data))
            out += data
