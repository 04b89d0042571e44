"""Deferred foreign-key checks, at the moments SQLite makes them.

SQLite counts the violations of deferred constraints a transaction leaves unresolved and refuses
to COMMIT while there are any; the transaction stays open, to be fixed or rolled back.  A
transaction's changes reach the database as a changeset (architecture.md, "Changesets"), so its own
connection never commits: the count is read from that connection (``SQLITE_DBSTATUS_DEFERRED_FKS``)
before the merge, and the same error raised.

``PRAGMA defer_foreign_keys`` is a flag of the connection that SQLite turns off whenever a
transaction ends, an autocommit read's included.  Ours spans several SQLite connections: inside
a transaction the flag lives on the connection its statements run on, outside one on the reader
(which runs the autocommit reads, so SQLite turns it off there as it would); see
:class:`Deferral`.
"""

from __future__ import annotations

import apsw

from .. import statements
from ..errors import IntegrityError, NotSupportedError
from .authorizer import Denied

FAILED = "FOREIGN KEY constraint failed"


def unresolved(conn: apsw.Connection) -> bool:
    """Whether the transaction open on ``conn`` leaves deferred foreign-key violations."""
    return conn.status(apsw.SQLITE_DBSTATUS_DEFERRED_FKS)[0] > 0


def check_commit(conn: apsw.Connection) -> None:
    """As SQLite's COMMIT checks: nothing is changed by a refusal.

    :raises IntegrityError: the stdlib's, with SQLite's message and error code.
    """
    if unresolved(conn):
        error = IntegrityError(FAILED)
        error.sqlite_errorcode = apsw.SQLITE_CONSTRAINT_FOREIGNKEY  # type: ignore[attr-defined]
        error.sqlite_errorname = "SQLITE_CONSTRAINT_FOREIGNKEY"  # type: ignore[attr-defined]
        raise error


def check_move(conn: apsw.Connection) -> None:
    """Before a transaction's changes so far move onto the merger (architecture.md, "Exclusive
    operations").

    A changeset cannot carry the count of unresolved violations: applied, they would be
    committed unchecked.

    :raises NotSupportedError: the transaction has some; it is left as it was.
    """
    if unresolved(conn):
        raise NotSupportedError(
            "a statement that needs the database to itself (a schema change, VACUUM, a header "
            "pragma) cannot run in a transaction with unresolved deferred foreign-key "
            "violations: resolve them first, or commit or roll back"
        )


def is_defer_pragma(sql: str) -> bool:
    found = statements.pragma(sql)
    return found is not None and found.name == "defer_foreign_keys"


def flag(conn: apsw.Connection) -> bool:
    row = conn.execute("PRAGMA defer_foreign_keys").fetchone()
    return bool(row and row[0])


def set_flag(conn: apsw.Connection, on: bool) -> None:
    conn.execute(f"PRAGMA defer_foreign_keys={int(on)}")


class Deferral:
    """The flag between transactions: on the reader until a write transaction takes it over
    (:meth:`take`) and ends (:meth:`end`)."""

    def __init__(self, reader: apsw.Connection, denied: Denied) -> None:
        self._reader = reader
        self._denied = denied  # our statements are not the application's to vet
        self._maybe = False  # the application set it on the reader since the last write

    def set_on_reader(self) -> None:
        self._maybe = True

    def take(self) -> bool:
        """At the start of a write transaction: whether it defers foreign-key checks."""
        if not self._maybe:
            return False
        with self._denied.muting():
            return flag(self._reader)

    def end(self) -> None:
        """A write transaction ended, which turns the flag off in SQLite."""
        if self._maybe:
            self._maybe = False
            with self._denied.muting():
                set_flag(self._reader, False)
