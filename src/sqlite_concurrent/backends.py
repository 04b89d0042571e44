"""What lies under a connection: a database file shared by processes, or a private database.

Nothing but a file on disk can be shared by processes.  Memory databases, temporary ones ("")
and read-only URIs need none of our machinery: a :class:`PrivateBackend` is one stock SQLite
connection that does everything, as the stdlib's would.  A :class:`SharedBackend` opens the file
(``engine/database.py``) and runs transactions as the rest of the package describes.  Both open,
run statements, end transactions and close as the connection (:mod:`.dbapi`) asks.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

import apsw

from . import filenames, shared_memory
from .cursor import Cursor
from .engine.database import OPEN_FLAGS, SharedDatabase, let_go
from .errors import NotSupportedError, OperationalError, translate
from .process import exiting, foreign, holding

if TYPE_CHECKING:
    from .dbapi import Connection


class Private(NamedTuple):
    """How SQLite opens a database no other process can reach."""

    name: str
    flags: int = OPEN_FLAGS
    vfs: str | None = None


class PrivateBackend:
    """One stock connection (``conn``) does everything; transactions open implicitly as the
    stdlib's."""

    def __init__(self, owner: Connection, conn: apsw.Connection) -> None:
        self._owner = exiting.weak_proxy(owner)  # no reference cycle (see exiting.py)
        self.conn = conn
        self.leftover: exiting.Leftover | None = None  # SQLite closes it with the connection

    @classmethod
    def open(cls, owner: Connection, private: Private) -> PrivateBackend:
        foreign.check_open(owner.path)
        conn = apsw.Connection(private.name, flags=private.flags, vfs=private.vfs)
        owner._opened.append(conn)
        conn.set_busy_timeout(int(owner.timeout * 1000))
        return cls(owner, conn)

    def in_transaction(self) -> bool:
        return not self.conn.get_autocommit()

    def execute(self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str) -> None:
        owner = self._owner
        conn = self.conn
        if kind == "dml" and owner._isolation_level is not None and conn.get_autocommit():
            begin = f"BEGIN {owner._isolation_level}"
            owner._trace_control(begin)
            try:
                conn.execute(begin)
            except apsw.Error as e:
                raise translate(e) from e
        owner._runner.run(cursor, conn, sql, parameters, many, False, kind)

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def end(self, *, commit: bool) -> None:
        if self.in_transaction():
            sql = "COMMIT" if commit else "ROLLBACK"
            self._owner._trace_control(sql)
            try:
                self.conn.execute(sql)
            except apsw.Error as e:
                raise translate(e) from e

    def track(self, owner: Connection) -> None:
        """Nothing: SQLite closes the database with the connection, at exit too."""

    def roll_back(self) -> None:
        """Nothing: SQLite rolls an open transaction back as it closes."""

    def leave(self) -> None:
        holding.close_all(self._owner._opened)


class SharedBackend:
    """The file ``owner.path``, shared with other processes: opened as a
    :class:`.SharedDatabase`; statements and transactions go through the connection's router
    and transactions (:mod:`.routing`, :mod:`.transactions`)."""

    def __init__(self, owner: Connection) -> None:
        self._owner = exiting.weak_proxy(owner)  # no reference cycle (see exiting.py)
        self._txns = owner._txns
        self._router = owner._router
        # What it holds, let go of if the connection is dropped unclosed (process/exiting.py).
        self.leftover: exiting.Leftover | None = None
        self._finalizer: weakref.finalize | None = None  # closes it at exit

    def open(
        self,
        owner: Connection,
        *,
        wal_limit: int,
        checkpoint_wait: float,
        group_commit: bool | None,
    ) -> SharedDatabase:
        """Open the file for ``owner`` (this backend's connection).

        :raises OperationalError: the file cannot be opened or switched to WAL mode.
        """
        db = SharedDatabase(
            owner.path,
            owner._opened,
            timeout=owner.timeout,
            wal_limit=wal_limit,
            checkpoint_wait=checkpoint_wait,
            group_commit=group_commit,
        )
        try:
            db.open(owner, exiting.weakly(db.holder_pids))
        except BaseException:
            db.abandon()
            raise
        return db

    def in_transaction(self) -> bool:
        return self._txns.is_open()

    def execute(self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str) -> None:
        if kind in ("begin", "commit", "rollback") or self._txns.aborted is not None:
            self._router.control(sql, kind)
            cursor._lastrowid = self._owner._last_insert_rowid  # as after any statement
        else:
            self._router.route(cursor, sql, parameters, many, kind)

    def begin(self) -> None:
        self._txns.begin()

    def end(self, *, commit: bool) -> None:
        txns = self._txns
        owner = self._owner
        if owner._trace is not None and txns.is_open():  # ``_trace_control``, on every commit
            owner._traced("COMMIT" if commit else "ROLLBACK")
        if txns.aborted is not None:
            txns.end_aborted(commit=commit)
        elif txns.later is not None:
            txns.later = None  # no statement ran: nothing to end
        elif txns.txn is not None:
            if commit:
                txns.commit()
            else:
                txns.rollback()

    def roll_back(self) -> None:
        """Roll back whatever is open, as a close does."""
        txns = self._txns
        txns.aborted = None
        txns.later = None
        if txns.txn is not None:
            txns.rollback()

    def track(self, owner: Connection) -> None:
        """Close ``owner`` at exit if it is still open then; let go of what it holds if it is
        dropped unclosed (``process/exiting.py``)."""
        db = owner._db
        assert db.holding is not None
        self.leftover = exiting.Leftover(
            functools.partial(let_go, db.holding, db.journal, db.slot_id, db.lockdb)
        )
        self._finalizer = exiting.track(owner, self.leftover)

    def leave(self) -> None:
        """Let go of the file, as the last step of a close."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._owner._db.leave()


def target(database: Any, uri: bool) -> tuple[str, Private | None]:
    """The database file to share, or the database as named and how to open it privately.

    Nothing but a file on disk can be shared by processes; memory databases, temporary ones
    ("") and read-only URIs need none of our machinery, so they get a plain connection.
    """
    if isinstance(database, bytes):
        database = os.fsdecode(database)
    if not isinstance(database, (str, os.PathLike)):
        raise TypeError(
            f"database must be a str, bytes or path-like object, not {type(database).__name__}"
        )
    path = os.fspath(database)
    if path in ("", ":memory:"):
        return path, Private(path)
    if not (uri and path.startswith("file:")):
        return path, None
    parsed = urllib.parse.urlsplit(path)
    params = dict(urllib.parse.parse_qsl(parsed.query))
    shared = shared_memory.memdb_name(urllib.parse.unquote(parsed.path), params)
    if shared is not None:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        return path, Private(shared, flags, shared_memory.MEMDB)
    if (
        params.get("mode") in ("memory", "ro")
        or params.get("immutable") == "1"
        or parsed.path in ("", ":memory:")
    ):
        return path, Private(path)
    unknown = set(params) - {"mode", "cache", "psow", "nolock", "vfs"} or (
        {"nolock", "vfs"} & set(params)
    )
    if unknown:
        raise NotSupportedError(
            f"URI parameter(s) {', '.join(sorted(unknown))} cannot be honoured for a database "
            "shared by processes"
        )
    path = filenames.from_uri_path(parsed.path)
    if params.get("mode") == "rw" and not os.path.exists(path):
        raise OperationalError("unable to open database file")
    return path, None
