"""``Connection.serialize`` and ``Connection.deserialize``, as in the stdlib (3.11+).

``serialize`` gives the database as the connection sees it: the committed database, or the open
transaction's view of it.  Its header says rollback-journal mode (bytes 18-19 = 1): SQLite opens
no WAL-mode database from memory, so the bytes of a WAL database (which a shared one always is)
could not be deserialized anywhere, not even by the stdlib (file format section 1.3.3).

``deserialize`` turns the connection into a private in-memory database holding the bytes, as
the stdlib's does on a file connection: the file, and everybody else using it, are untouched.
"""

from __future__ import annotations

import sqlite3.dump as _stdlib_dump
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import apsw

from .backends import PrivateBackend
from .commit import merge
from .errors import NotSupportedError, OperationalError, translate

if TYPE_CHECKING:
    from .dbapi import Connection

_ROLLBACK_MODE = b"\x01\x01"  # file format write/read versions: legacy (rollback journal)


def serialize(connection: Connection, name: str) -> bytes:
    """:raises OperationalError: there is no database ``name`` (or it is empty)."""
    if not isinstance(name, str):
        raise TypeError(f"serialize() argument 'name' must be str, not {type(name).__name__}")
    txn = connection._txns.txn
    overlay = None
    if connection._private is None and connection._txns.exclusive is None and txn is not None:
        txn.ensure_pinned()
        overlay = connection._db.slot.overlay
    conn = connection._router.current_connection()
    try:
        with connection._denied.muting():  # our reads of the pages, not the application's
            data = conn.serialize(name)
    except apsw.Error as e:
        raise translate(e) from e
    if not data:
        raise OperationalError(f"unable to serialize '{name}'")
    if connection._private is not None or name.lower() != "main":
        return data
    image = bytearray(data)
    image[18:20] = _ROLLBACK_MODE
    if overlay is not None:
        # The transaction's connection sees a change counter of its own (overlay.py); the
        # database's is the snapshot's.
        real = overlay.snapshot.read_page(1)
        image[24:28] = real[24:28]
        image[92:96] = real[92:96]
    return bytes(image)


def deserialize(connection: Connection, data: Any, name: str) -> None:
    """:raises NotSupportedError: ``name`` is not the main database of a shared connection."""
    if not isinstance(name, str):
        raise TypeError(f"deserialize() argument 'name' must be str, not {type(name).__name__}")
    view = memoryview(data)  # TypeError for what is not a buffer, as the stdlib's
    if not view.contiguous:
        raise BufferError("deserialize() needs a contiguous buffer")
    if connection._private is not None:
        try:
            connection._private.deserialize(name, view)
        except apsw.Error as e:
            raise translate(e) from e
        return
    if name.lower() != "main":
        raise NotSupportedError(
            f"deserialize() into {name!r} of a database shared by processes is not supported"
        )
    memory = apsw.Connection(":memory:")
    try:
        memory.set_busy_timeout(int(connection.timeout * 1000))
        memory.deserialize("main", view)
    except apsw.Error as e:
        memory.close()
        raise translate(e) from e
    _become_private(connection, memory)


def _become_private(connection: Connection, memory: apsw.Connection) -> None:
    """Leave the shared database (as ``close`` does) and go on with ``memory`` alone, keeping
    what the application set on the connection."""
    in_transaction = connection._txns.txn is not None
    connection._txns.aborted = None
    if in_transaction:
        connection._txns.rollback()
    for cursor in list(connection._reader_cursors):
        cursor._rows = iter(())  # their statements go with the connection that ran them
    connection._reader_cursors.clear()
    connection._leave()
    connection._opened.append(memory)
    connection._backend = PrivateBackend(connection, memory)
    connection._private = connection._reader = connection._merger = memory
    connection._snapshot_conn = connection._txn_connection.conn = None
    connection._runner.statement_shapes.clear()
    try:
        for pragma in connection._connection_pragmas:
            memory.execute(pragma).fetchall()
        for register in connection._registrations:
            register(memory)
        connection._install_authorizers()
        if in_transaction:
            # SQLite closes the database under an open transaction and leaves the connection
            # in one, with nothing in it: the stdlib then reports it open until it ends.
            memory.execute("BEGIN")
    except apsw.Error as e:
        raise translate(e) from e


def iterdump(connection: Connection) -> Iterator[str]:
    """The database as SQL text, as the stdlib dumps it, without our commit markers."""
    marker = merge.MARKER_TABLE
    for line in _stdlib_dump._iterdump(connection):  # type: ignore[attr-defined]
        if marker in line and (
            line.startswith(f'INSERT INTO "{marker}"') or line.startswith(f"CREATE TABLE {marker}")
        ):
            continue
        yield line
