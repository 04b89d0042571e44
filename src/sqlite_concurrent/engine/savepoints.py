"""The savepoints of a write transaction, and how they move onto the merger with it.

SQLite keeps a transaction's savepoints on the connection that runs it.  A transaction that
meets a statement its changeset cannot carry (a schema change, a TEMP table: architecture.md,
"Exclusive operations") moves from its transaction connection to the merger, and its open savepoints
must move with it, each over exactly the work it covers, so that a later ``RELEASE`` works and a
``ROLLBACK TO`` undoes exactly what it would have undone on the stdlib's one connection.

So the transaction keeps its savepoint stack (``Stack``, followed statement by statement as
SQLite does), and at the move ``capture`` takes, on the transaction connection, the changes
from the snapshot up to where each open savepoint began: it rolls back to each savepoint in
turn, innermost first, and asks the session for its changeset then (a session describes the
rows as they are when asked).  On the merger, once the transaction's changes are applied and
checked, ``restore`` walks back through those states and opens each savepoint again over its
own: undo the changes applied so far (an inverted changeset), apply those made before the next
savepoint, open it, and so on, ending with all of the transaction's changes applied.
AUTOINCREMENT counters (``sqlite_sequence``, which no changeset carries) are set as they stood
at each savepoint.

One case cannot move exactly: a savepoint opened while the transaction's rows broke a deferred
foreign key.  SQLite counts such breaches per connection and an applied changeset leaves the
count at zero, so the commit would not refuse them as it must; the move raises
``NotSupportedError`` instead, and the transaction rolls back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import apsw

from ..commit.merge import counters
from ..conflicts import conflict
from ..errors import NotSupportedError
from ..identifiers import quote

_TOKEN = re.compile(
    r"""\s+|--[^\n]*|/\*.*?(?:\*/|$)
    |(?P<word>[^\W\d][\w$]*)
    |(?P<quoted>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|'(?:[^']|'')*')
    |(?P<other>.)""",
    re.S | re.X,
)

DEFERRED_FK = (
    "a transaction whose open savepoints hold rows that break a deferred foreign key cannot "
    "go on after a schema change or TEMP statement (it moves to another SQLite connection, "
    "which would not remember the breach); the transaction was rolled back"
)

_ABORT_KINDS = {
    apsw.SQLITE_CHANGESET_DATA: "data",
    apsw.SQLITE_CHANGESET_NOTFOUND: "notfound",
    apsw.SQLITE_CHANGESET_CONFLICT: "conflict",
    apsw.SQLITE_CHANGESET_CONSTRAINT: "constraint",
}


def _tokens(sql: str) -> list[tuple[str, str]]:
    """(``word`` | ``quoted`` | ``other``, text) up to the first ``;``."""
    out = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind is None:
            continue
        if m.group(0) == ";":
            break
        out.append((kind, m.group(0)))
    return out


def _name(kind: str, text: str) -> str:
    if kind == "quoted":
        inner = text[1:-1]
        return inner if text[0] == "[" else inner.replace(text[0] * 2, text[0])
    return text


def parse(sql: str) -> tuple[str, str] | None:
    """``("SAVEPOINT" | "RELEASE" | "ROLLBACK", name)`` for ``SAVEPOINT x``, ``RELEASE
    [SAVEPOINT] x`` and ``ROLLBACK [TRANSACTION] TO [SAVEPOINT] x``; else ``None``."""
    tokens = _tokens(sql)
    words = [text.upper() if kind == "word" else None for kind, text in tokens]
    if not words:
        return None
    op, at = words[0], 1
    if op == "ROLLBACK":
        if words[at : at + 1] == ["TRANSACTION"]:
            at += 1
        if words[at : at + 1] != ["TO"]:
            return None
        at += 1
    elif op not in ("SAVEPOINT", "RELEASE"):
        return None
    if op != "SAVEPOINT" and words[at : at + 1] == ["SAVEPOINT"] and len(tokens) > at + 1:
        at += 1
    if len(tokens) != at + 1 or tokens[at][0] == "other":
        return None
    return op, _name(*tokens[at])


class Stack:
    """A transaction's open savepoints, oldest first, as SQLite keeps them."""

    def __init__(self, *, begun_by_savepoint: bool) -> None:
        self.names: list[str] = []
        # Begun by SAVEPOINT (no BEGIN): releasing the outermost one commits the transaction.
        self.begun_by_savepoint = begun_by_savepoint

    def ran(self, sql: str) -> None:
        """Follow a statement that ran without error."""
        parsed = parse(sql)
        if parsed is None:
            return
        op, name = parsed
        if op == "SAVEPOINT":
            self.names.append(name)
            return
        at = self._find(name)
        if at is not None:
            # RELEASE drops it and those above; ROLLBACK TO keeps it open.
            del self.names[at + (op == "ROLLBACK") :]

    def _find(self, name: str) -> int | None:
        wanted = name.lower()  # SQLite compares savepoint names without regard to case
        for at in range(len(self.names) - 1, -1, -1):
            if self.names[at].lower() == wanted:
                return at
        return None

    def would_end(self, sql: str) -> bool:
        """Whether ``sql`` (a RELEASE) would release the outermost savepoint of a transaction
        begun by one: a commit."""
        parsed = parse(sql)
        return (
            self.begun_by_savepoint
            and parsed is not None
            and parsed[0] == "RELEASE"
            and self._find(parsed[1]) == 0
        )

    @property
    def ended(self) -> bool:
        """The outermost savepoint of a transaction begun by one was released: committed."""
        return self.begun_by_savepoint and not self.names


# Rows of tables whose changes a changeset cannot carry with their rowids (``rowid_keys``), by
# table and rowid (None: no row there), as they stood at a point of the transaction.
KeyedRows = dict[tuple[Any, int], Any]


@dataclass
class Level:
    """One open savepoint: the changes from the snapshot up to where it began."""

    name: str
    changeset: bytes
    sequences: dict[str, int]
    keyed: KeyedRows = field(default_factory=dict)


@dataclass
class Saved:
    """The open savepoints of a transaction, captured for its move to the merger."""

    levels: list[Level] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)  # at the end of its work so far
    keyed: KeyedRows = field(default_factory=dict)  # likewise
    keyed_tables: Any = None  # ``rowid_keys.KeyedTable`` by name, for the rows in ``keyed``


def capture(
    conn: apsw.Connection,
    session: apsw.Session,
    names: list[str],
    keyed: Any = None,
    rowids: dict[str, set[int]] | None = None,
) -> Saved:
    """On the transaction connection, at the end of its work: the state at each savepoint.

    ``keyed`` and ``rowids``: the ``rowid_keys`` tables the transaction wrote and the rowids
    it touched in them; their rows are kept as they are, not as changesets.

    Leaves the connection rolled back to the outermost savepoint; the caller rolls it all back.
    """

    def keyed_rows() -> KeyedRows:
        return {
            (name, rowid): conn.execute(keyed[name].select, (rowid,)).fetchone()
            for name, ids in (rowids or {}).items()
            for rowid in ids
        }

    saved = Saved(sequences=counters(conn), keyed=keyed_rows(), keyed_tables=keyed)
    for at in range(len(names) - 1, -1, -1):
        conn.execute(f"ROLLBACK TO {quote(names[at])}")
        saved.levels.append(Level(names[at], session.changeset(), counters(conn), keyed_rows()))
        if at:
            # The next ROLLBACK TO of the same name must reach the savepoint below this one.
            conn.execute(f"RELEASE {quote(names[at])}")
    saved.levels.reverse()
    return saved


def restore(conn: apsw.Connection, applied: bytes, saved: Saved, base: dict[str, int]) -> None:
    """Open the savepoints again on the merger, in its write transaction, where ``applied``
    (the transaction's changes from its snapshot) has just been applied and checked.

    ``base``: ``sqlite_sequence`` before ``applied``.

    :raises ConflictError: a row the transaction changed and changed back has since been
        changed by another transaction (it wrote the row, so it loses, as at any merge).
    """
    if conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, -1):
        conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)  # changesets hold trigger effects
    current = applied
    skip = frozenset(saved.keyed_tables or ())
    rows = saved.keyed
    for level in [*saved.levels, Level("", applied, saved.sequences, saved.keyed)]:
        if level.changeset != current:
            _apply(conn, apsw.Changeset.invert(current), skip)
            _apply(conn, level.changeset, skip)
            current = level.changeset
        if level.keyed != rows:
            _set_rows(conn, saved.keyed_tables, rows, level.keyed)
            rows = level.keyed
        _set_sequences(conn, base, level.sequences)
        if level.name:
            conn.execute(f"SAVEPOINT {quote(level.name)}")


def _set_rows(conn: apsw.Connection, tables: Any, have: KeyedRows, want: KeyedRows) -> None:
    """Put the transaction's rows of ``rowid_keys`` tables as they were at a savepoint.  Plain
    statements, no REPLACE: a row of another transaction in the way is a conflict."""
    changed = [(key, row) for key, row in want.items() if row != have.get(key)]
    for (name, rowid), row in changed:  # rows gone first, so their keys are free
        if row is None:
            conn.execute(f"DELETE FROM main.{quote(name)} WHERE _rowid_ = ?", (rowid,))
    for (name, rowid), row in changed:
        if row is None:
            continue
        table = tables[name]
        cols = ", ".join(quote(c) for c in table.columns)
        marks = ", ".join("?" * (len(table.columns) + 1))
        try:
            if have.get((name, rowid)) is not None:
                sets = ", ".join(f"{quote(c)} = ?" for c in table.columns)
                conn.execute(
                    f"UPDATE main.{quote(name)} SET {sets} WHERE _rowid_ = ?", (*row, rowid)
                )
            else:
                conn.execute(
                    f"INSERT INTO main.{quote(name)}(_rowid_, {cols}) VALUES ({marks})",
                    (rowid, *row),
                )
        except apsw.ConstraintError:
            raise conflict(name, (rowid,), "constraint") from None


def _apply(conn: apsw.Connection, changeset: bytes, skip: frozenset[str] = frozenset()) -> None:
    if not changeset:
        return
    found: list[Any] = []

    def on_conflict(reason: int, change: apsw.TableChange) -> int:
        if reason == apsw.SQLITE_CHANGESET_FOREIGN_KEY:
            # The state at a savepoint breaks a deferred foreign key.  Legal until COMMIT, but
            # an applied changeset leaves SQLite's count of such breaches at zero, so the
            # commit would no longer refuse it.
            found.append(NotSupportedError(DEFERRED_FK))
            return apsw.SQLITE_CHANGESET_ABORT
        values = change.old if change.old is not None else change.new
        key = None if values is None else tuple(values[i] for i in sorted(change.pk_columns))
        found.append(conflict(change.name, key, _ABORT_KINDS.get(reason, "constraint")))
        return apsw.SQLITE_CHANGESET_ABORT

    try:
        apsw.Changeset.apply(
            changeset,
            conn,
            filter=(lambda table: table not in skip) if skip else None,
            conflict=on_conflict,
            flags=apsw.SQLITE_CHANGESETAPPLY_FKNOACTION,
        )
    except (apsw.AbortError, apsw.ConstraintError):  # the latter after a foreign key
        if found:
            raise found[0] from None
        raise


def _set_sequences(conn: apsw.Connection, base: dict[str, int], want: dict[str, int]) -> None:
    """Each counter as the transaction had it, never below where others had taken it."""
    now = counters(conn)
    target = {name: max(base.get(name, 0), want.get(name, 0)) for name in {*base, *want}}
    for name in now.keys() - target.keys():
        conn.execute("DELETE FROM main.sqlite_sequence WHERE name = ?", (name,))
    for name, seq in target.items():
        if name not in now:
            conn.execute("INSERT INTO main.sqlite_sequence(name, seq) VALUES (?, ?)", (name, seq))
        elif now[name] != seq:
            conn.execute("UPDATE main.sqlite_sequence SET seq = ? WHERE name = ?", (seq, name))
