"""Keeping a connection's SQLite connections agreeing on schemas and attached databases.

A connection of ours runs statements on several SQLite connections (:mod:`.dbapi`).  A schema
change on the merger must reach the reader before the application reads columns, ATTACH and
DETACH must reach every connection that reads the attached file, and TEMP objects live on the
merger alone (:mod:`.connstate`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import apsw

from . import filenames, identifiers
from .cursor import Cursor
from .errors import OperationalError, translate
from .process import exiting

if TYPE_CHECKING:
    from .dbapi import Connection
    from .running import StatementRunner


class Schemas:
    """Schema and attachment changes, carried to every SQLite connection of ``owner``."""

    def __init__(self, owner: Connection, runner: StatementRunner) -> None:
        self._owner = exiting.weak_proxy(owner)  # no reference cycle (see exiting.py)
        self._runner = runner

    def attach_or_detach(
        self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str
    ) -> None:
        """ATTACH or DETACH on the merger, which has every attached database, then the same
        on the reader and the transaction connection for a database file (:mod:`.connstate`)."""
        merger = self._owner._merger
        before = merger.db_names()
        self._runner.run(cursor, merger, sql, parameters, many, False, kind)
        after = merger.db_names()
        for name in after:
            if name not in before:
                self._copy_attachment(name, merger.db_filename(name))
        for name in before:
            if name not in after:
                self._drop_attachment(name)

    def _copy_attachment(self, name: str, path: str) -> None:
        if not self._owner._state.attached(name, path):
            self.refresh_local()  # an in-memory database: the merger's alone
            return
        try:
            self.muted(self._owner._reader, "ATTACH DATABASE ? AS ?", (path, name))
            if self._owner._txn_connection.conn is not None:
                self.muted(
                    self._owner._txn_connection.conn,
                    "ATTACH DATABASE ? AS ?",
                    (copy_uri(path), name),
                )
        except apsw.Error as e:
            self._owner._state.detached(name)
            for conn in (
                self._owner._txn_connection.conn,
                self._owner._reader,
                self._owner._merger,
            ):
                if conn is not None and name in conn.db_names():
                    with contextlib.suppress(apsw.Error):
                        self.muted(conn, "DETACH DATABASE ?", (name,))
            raise translate(e) from e

    def _drop_attachment(self, name: str) -> None:
        path = self._owner._state.detached(name)
        if path is None:
            self.refresh_local()
            return
        copies = [
            conn
            for conn in (self._owner._txn_connection.conn, self._owner._reader)
            if conn is not None and name in conn.db_names()
        ]
        if any(conn.txn_state(name) != apsw.SQLITE_TXN_NONE for conn in copies):
            # In use (an unfinished SELECT, or the open transaction read it): SQLite's one
            # connection would refuse, so the merger takes it back.
            self.muted(self._owner._merger, "ATTACH DATABASE ? AS ?", (path, name))
            self._owner._state.attached(name, path)
            raise OperationalError(f"database {name} is locked")
        for conn in copies:
            self.muted(conn, "DETACH DATABASE ?", (name,))

    def reload(self, conn: apsw.Connection, schema: str) -> None:
        """Make ``conn`` read ``schema``'s schema again if another connection changed it."""
        with contextlib.suppress(apsw.Error):
            schema_table = f"{identifiers.quote(schema)}.sqlite_master"
            self.muted(conn, f"SELECT 1 FROM {schema_table} LIMIT 1", ())

    def muted(self, conn: apsw.Connection, sql: str, parameters: Any) -> None:
        """Run our own statement where authorizers would refuse the application's."""
        self._owner._denied.muted = True
        try:
            conn.execute(sql, parameters).fetchall()
        finally:
            self._owner._denied.muted = False

    def changed(self) -> None:
        """A statement on the merger may have changed a schema the other connections cache."""
        self.refresh_local()
        # The schema cookie that keys these is main's; an attached database has its own.
        self._runner.statement_shapes.clear()
        self._owner._txn_connection.schema_changed()
        # SQLite notices a changed schema when it runs a statement, after the application may
        # have read its columns: the reader loads the new one now.
        for schema in ("main", *self._owner._state.files):
            self.reload(self._owner._reader, schema)

    def refresh_local(self) -> None:
        """After a statement on the merger that may have created or dropped TEMP objects."""
        self._owner._state.refresh(self._owner._merger)


def copy_uri(path: str) -> str:
    """An attached file for the transaction connection: through the default VFS, since the
    overlay VFS (its main database's, which attached files inherit) hides -wal files."""
    return filenames.uri(path, f"vfs={apsw.vfs_names()[0]}")
