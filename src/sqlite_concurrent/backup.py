"""``Connection.backup``: copying a database into another connection, as the stdlib does.

Into a stdlib connection: the stdlib's own backup, from an in-memory copy of a consistent
snapshot (two SQLite libraries cannot share a backup handle).  Into one of ours on a shared
file: an exclusive operation there (architecture.md, "Exclusive operations"), since every page of
the database is replaced.
"""

from __future__ import annotations

import sqlite3 as _stdlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import apsw

from .commit import merge
from .errors import NotSupportedError, OperationalError, ProgrammingError, translate

if TYPE_CHECKING:
    from .dbapi import Connection

_DONE = 101  # SQLITE_DONE, the status the stdlib passes to progress when finished


def run(
    source: Connection,
    target: Any,
    *,
    pages: int,
    progress: Callable[[int, int, int], Any] | None,
    name: str,
    sleep: float,
) -> None:
    """Copy ``source`` into ``target``, a connection of ours or the stdlib's (the caller, which
    owns our class, has checked that)."""
    if target is source:
        raise ValueError("target cannot be the same connection instance")
    if progress is not None and not callable(progress):
        raise TypeError("progress argument must be a callable")
    if pages == 0:
        pages = -1
    if isinstance(target, _stdlib.Connection):
        _into_stdlib(source, target, pages, progress, name, sleep)
    else:
        target._check()
        if target.in_transaction:
            raise OperationalError("target is in transaction")
        _into_ours(source, target, pages, progress, name, sleep)


def _source(source: Connection, name: str) -> apsw.Connection:
    # TEMP objects and attached in-memory databases are on the merger alone (connstate.py).
    if name.lower() in source._state.local_dbs:
        return source._merger
    return source._reader


def _into_stdlib(
    source: Connection,
    target: _stdlib.Connection,
    pages: int,
    progress: Callable[[int, int, int], Any] | None,
    name: str,
    sleep: float,
) -> None:
    if sys.version_info < (3, 11):
        raise NotSupportedError("backup into a stdlib connection needs Python 3.11+")
    try:
        data = _source(source, name).serialize(name)
    except apsw.Error as e:
        raise translate(e) from e
    copy = _stdlib.connect(":memory:")
    try:
        if data:
            image = bytearray(data)
            # A WAL-mode header cannot be opened from memory: present it as rollback mode.
            image[18:20] = b"\x01\x01"
            copy.deserialize(bytes(image))
        copy.backup(target, pages=pages, progress=progress, sleep=sleep)
    finally:
        copy.close()


def _into_ours(
    source: Connection,
    target: Connection,
    pages: int,
    progress: Callable[[int, int, int], Any] | None,
    name: str,
    sleep: float,
) -> None:
    if target._private is not None:
        _copy(_source(source, name), target._private, pages, progress, name, sleep)
        return

    def replace_all() -> None:
        conn = target._merger
        _copy(_source(source, name), conn, pages, progress, name, sleep)
        # The copy carries the source's commit markers, if it has any; ids here come from this
        # lock database, so they would collide.  No transaction is live to need one.
        if merge.has_marker_table(conn):
            conn.execute(f"DELETE FROM {merge.MARKER_TABLE}")
        mode = conn.execute("PRAGMA journal_mode").fetchone()
        if mode is None or mode[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")

    try:
        target._txns.on_merger.alone(replace_all)
    except apsw.Error as e:
        raise translate(e) from e


def _copy(
    source: apsw.Connection,
    dest: apsw.Connection,
    pages: int,
    progress: Callable[[int, int, int], Any] | None,
    name: str,
    sleep: float,
) -> None:
    try:
        with dest.backup("main", source, name) as step:
            while True:
                try:
                    done = step.step(pages)
                except (apsw.BusyError, apsw.LockedError):
                    # The stdlib's backup contract: sleep ``sleep`` seconds and retry.  Only a
                    # stock writer can hold the target busy here (ours wait for the db lock).
                    time.sleep(sleep)
                    continue
                if progress is not None:
                    progress(_DONE if done else 0, step.remaining, step.page_count)
                if done:
                    return
    except apsw.SQLError as e:
        if "unknown database" in str(e):
            raise OperationalError(f"unknown database {name}") from e
        raise ProgrammingError(str(e)) from e
