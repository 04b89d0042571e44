"""Blind-insert rebase: auto-assigned rowids that nobody saw get fresh ones at merge
(architecture.md, "Rowids nobody saw").

Two transactions inserting into one table both pick max(rowid)+1 and would conflict on it.
A row inserted with an automatically assigned rowid that its transaction never observed is
therefore re-inserted at merge with a fresh rowid.  Observed means: ``cursor.lastrowid`` was
read after the INSERT, the INSERT had RETURNING, ``last_insert_rowid()`` was called, a later
statement read the table, the table has triggers, or a row the transaction wrote references the
table by a foreign key.  Observed rows keep their rowid and conflict normally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import apsw

from ..identifiers import quote

_NAME = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_$]*)'
_INSERT = re.compile(
    rf"\s*(?:INSERT(?:\s+OR\s+\w+)?|REPLACE)\s+INTO\s+(?:{_NAME}\s*\.\s*)?(?P<table>{_NAME})"
    rf"(?:\s+AS\s+{_NAME})?\s*(?P<cols>\([^()]*\))?\s*(?P<rest>.*)",
    re.I | re.S,
)
_OBSERVING = re.compile(r"\bRETURNING\b|\bON\s+CONFLICT\b", re.I)
_ROWID_NAMES = frozenset({"rowid", "_rowid_", "oid"})


def _unquote(name: str) -> str:
    name = name.strip()
    if name[:1] in '"`[':
        return name[1:-1].replace('""', '"')
    return name


@dataclass(frozen=True)
class TableInfo:
    rebasable: bool  # a rowid table without triggers
    alias: str | None  # the INTEGER PRIMARY KEY column, if any
    columns: tuple[str, ...]
    parents_of: frozenset[str]  # tables this table references by foreign key


def table_info(conn: apsw.Connection, table: str) -> TableInfo | None:
    # PRAGMA main.x, not pragma_x(): the table-valued form reads every attached database's
    # schema, opening a read transaction on each that then lasts as long as the transaction's.
    listed = conn.execute(f"PRAGMA main.table_list({quote(table)})").fetchone()
    if listed is None or listed[2] != "table":
        return None
    without_rowid = bool(listed[4])
    cols = [r for r in conn.execute(f"PRAGMA main.table_xinfo({quote(table)})") if r[6] == 0]
    pks = [r for r in cols if r[5]]
    alias = None
    if len(pks) == 1 and pks[0][2].upper() == "INTEGER" and not without_rowid:
        alias = pks[0][1]
    has_triggers = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type='trigger' AND tbl_name=?", (table,)
    ).fetchone()
    parents = frozenset(r[2] for r in conn.execute(f"PRAGMA main.foreign_key_list({quote(table)})"))
    return TableInfo(
        rebasable=not without_rowid and not has_triggers,
        alias=alias,
        columns=tuple(r[1] for r in cols),
        parents_of=parents,
    )


def _values_tuples(rest: str) -> list[list[str]] | None:
    """Top-level items of ``VALUES (...), (...)``, or None if it is not that simple."""
    if rest[:6].upper() != "VALUES":
        return None
    tuples: list[list[str]] = []
    depth, item, items, quote = 0, [], [], ""
    for ch in rest[6:]:
        if quote:
            item.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
            item.append(ch)
        elif ch == "(":
            depth += 1
            if depth > 1:
                item.append(ch)
        elif ch == ")":
            depth -= 1
            if depth == 0:
                items.append("".join(item).strip())
                tuples.append(items)
                item, items = [], []
            else:
                item.append(ch)
        elif ch == "," and depth == 1:
            items.append("".join(item).strip())
            item = []
        elif depth >= 1:
            item.append(ch)
        elif not ch.isspace() and ch not in ",;":
            return None  # something after the tuples (e.g. ON CONFLICT): not simple
    return tuples or None


def auto_rowid_table(sql: str, info_for) -> str | None:
    """The table this INSERT fills with automatically assigned rowids (all its rows), or None."""
    m = _INSERT.match(sql)
    if m is None or _OBSERVING.search(m.group("rest")):
        return None
    table = _unquote(m.group("table"))
    info = info_for(table)
    if info is None or not info.rebasable:
        return None
    rest = m.group("rest").strip()
    if m.group("cols"):
        names = {_unquote(n).lower() for n in m.group("cols")[1:-1].split(",")}
        explicit = _ROWID_NAMES | ({info.alias.lower()} if info.alias else set())
        return None if names & explicit else table
    if rest.upper().startswith("DEFAULT VALUES"):
        return table
    if info.alias is None:
        return table if rest[:6].upper() in ("VALUES", "SELECT") else None
    tuples = _values_tuples(rest)
    if not tuples:
        return None
    at = info.columns.index(info.alias)
    return table if all(len(t) > at and t[at].upper() == "NULL" for t in tuples) else None


@dataclass
class Rebase:
    """One transaction's auto-assigned, not yet observed rows."""

    pending: dict[str, set[int]] = field(default_factory=dict)
    statement_table: str | None = None
    statement_rows: list[tuple[str, int]] = field(default_factory=list)

    def start_statement(self, auto_table: str | None) -> list[tuple[str, int]]:
        """Returns the list that will collect this statement's auto rows (for lastrowid)."""
        self.statement_table = auto_table
        self.statement_rows = []
        return self.statement_rows

    def inserted(self, table: str, rowid: int) -> bool:
        """Record an auto row; False if it is not one (the caller then locks it as usual)."""
        if table != self.statement_table:
            return False
        self.pending.setdefault(table, set()).add(rowid)
        self.statement_rows.append((table, rowid))
        return True

    def observe_tables(self, tables) -> None:
        for t in tables:
            self.pending.pop(t, None)

    def observe_rows(self, rows: list[tuple[str, int]]) -> None:
        for table, rowid in rows:
            self.pending.get(table, set()).discard(rowid)

    def observe_all(self) -> None:
        self.pending.clear()

    def result(self, written_tables: set[str], info_for) -> dict[str, frozenset[int]]:
        """What to rebase at merge, after the foreign-key rule."""
        for child in written_tables:
            info = info_for(child)
            if info is not None:
                self.observe_tables(info.parents_of)
        return {t: frozenset(rows) for t, rows in self.pending.items() if rows}
