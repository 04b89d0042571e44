"""The connection a connection's optimistic transactions run their statements on.

It is opened through the overlay VFS (architecture.md, "The overlay VFS"), so SQLite reads the
transaction's snapshot and keeps its writes private, and it carries what the application set on
the connection: its functions and collations, connection pragmas and attached files.  One serves
every transaction of the connection in turn; a schema change since it last served one replaces
it (:meth:`TransactionConnection.pinned`).  It is what ``engine/transaction.py`` calls its
``Connections``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import apsw

from . import filenames
from .engine import rebase
from .engine.transaction import WriteTransaction
from .process import exiting
from .schemas import copy_uri
from .storage.overlay import VFS_NAME

if TYPE_CHECKING:
    from .dbapi import Connection


class TransactionConnection:
    """``owner``'s transaction connection, opened when a transaction first needs it."""

    def __init__(self, owner: Connection) -> None:
        self._owner = exiting.weak_proxy(owner)  # no reference cycle (see exiting.py)
        self.conn: apsw.Connection | None = None
        self._cookie: int | None = None  # the schema cookie it last served a snapshot under
        self._table_infos: dict[tuple[int, str], rebase.TableInfo | None] = {}
        self._auto_tables: dict[tuple[int, str], str | None] = {}

    def open(self) -> apsw.Connection:
        conn = self.conn
        if conn is not None:
            return conn
        owner = self._owner
        uri = filenames.uri(filenames.for_overlay(owner.path), f"sc_slot={owner._db.slot_id}")
        conn = apsw.Connection(
            uri,
            flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI,
            vfs=VFS_NAME,
        )
        owner._opened.append(conn)
        # Before anything else (architecture.md, "The overlay VFS"): a journal file would be
        # created beside the real db.
        conn.execute("PRAGMA journal_mode=MEMORY")
        # Measured: a rollback journal in a private file (bounded memory for huge transactions)
        # cost 60-80 us on every transaction through Python VFS calls, and saved a third of
        # the peak only: SQLite's session keeps every changed row's old values in memory anyway.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.set_busy_timeout(int(owner.timeout * 1000))  # an attached file may be locked
        conn.execute("PRAGMA cache_size=-16384")  # dirty pages past it spill to the overlay
        for pragma in owner._connection_pragmas:
            conn.execute(pragma)
        for register in owner._registrations:
            register(conn)
        for name, path in owner._state.files.items():
            conn.execute("ATTACH DATABASE ? AS ?", (copy_uri(path), name))
        conn.authorizer = owner._authorizer_for(owner._txn_authorizer)
        conn.set_update_hook(_row_write_hook(owner))
        self.conn = conn
        return conn

    def connection_for(self, txn: WriteTransaction) -> apsw.Connection:
        if self.conn is None:
            # Opening reads the database header, which must come from a snapshot.
            txn.ensure_pinned()
        return self.open()

    def pinned(self, txn: WriteTransaction) -> None:
        """A transaction's snapshot is pinned; nothing of it has run on its connection yet.

        When the schema changed since the transaction connection last served a snapshot, its
        cached statements were prepared for the old one: SQLite prepares such a statement again
        only when it steps it, after we have read its columns (the description).  A fresh
        connection replaces it then; the schema changes rarely.
        """
        cookie = txn.schema_version
        if cookie == self._cookie:
            return
        old = self.conn
        # None while the first transaction opens it: nothing cached yet, nothing to replace.
        if old is not None and txn.conn is old:
            self.conn = None
            self._owner._runner.statement_shapes.clear()
            txn.replace_connection(self.open())
            self._owner._opened.remove(old)
            old.close()
        self._cookie = cookie

    def schema_changed(self) -> None:
        """The schema may have changed: the next snapshot is checked (:meth:`pinned`)."""
        self._cookie = None

    def table_info(self, txn: WriteTransaction, table: str) -> rebase.TableInfo | None:
        """Per schema version; read through the transaction connection (its snapshot)."""
        assert txn.conn is not None
        key = (txn.schema_version, table)
        if key not in self._table_infos:
            self._table_infos[key] = rebase.table_info(txn.conn, table)
        return self._table_infos[key]

    def auto_rowid_table(self, txn: WriteTransaction, sql: str) -> str | None:
        """Which table this DML statement fills with auto-assigned rowids; on every statement,
        so cached by schema version and SQL text."""
        key = (txn.schema_version, sql)
        if key not in self._auto_tables:
            if len(self._auto_tables) > 4096:
                self._auto_tables.clear()
            self._auto_tables[key] = rebase.auto_rowid_table(sql, lambda t: self.table_info(txn, t))
        return self._auto_tables[key]


def _row_write_hook(owner: Connection) -> Callable[[int, str, str, int], None]:
    """The transaction connection's update hook, called for every row written: tells the open
    blobs and the open transaction.  It holds the connection's open blobs (they refer to no
    connection) and its transactions by a weak proxy: what the transaction connection holds
    must not keep the connection alive (``process/exiting.py``)."""
    blobs = owner._open_blobs
    txns = weakref.proxy(owner._txns)

    def on_row_write(op: int, db: str, table: str, rowid: int) -> None:
        blobs.row_written(db, table, rowid)
        try:
            txn = txns.txn
        except ReferenceError:  # the connection is gone
            return
        if txn is not None:
            txn.on_row_write(op, db, table, rowid)

    return on_row_write
