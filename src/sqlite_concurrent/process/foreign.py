"""Keeping a second copy of SQLite in this process off the files ours has open.

The stdlib ``sqlite3`` module and APSW each carry their own SQLite library.  POSIX locks belong to
the process, so neither library sees the other's locks, and closing ANY descriptor on a file drops
every lock the process holds on it (architecture.md, "Snapshots, and the locks a close drops", "lost
locks"; https://sqlite.org/howtocorrupt.html, section 2.2.1).  Measured: a stdlib connection that
read a database ours had open, then closed, dropped our locks on it; seeing no other connection, it
checkpointed and deleted the WAL and its index, and of five commits ours acknowledged a fresh
process saw only the first.  The same after ours had closed left APSW's SQLite on the deleted
``-shm``, and our next connect failed.

Both orders are refused before the second library opens the file:

* :func:`install` adds an audit hook: a stdlib connect (event ``sqlite3.connect``) to a file
  this process holds through APSW's SQLite (:func:`held`) raises ``sqlite3.OperationalError``.
* :func:`check_open` runs before our open of a file: descriptors the process has on it, its
  ``-wal`` or ``-shm`` that APSW's SQLite does not hold belong to another library (or to a plain
  ``open()``), and closing them would drop our locks, so our connect is refused.

Stdlib connections to other files, to memory, and ones that closed before ours opened are never
affected; nothing here runs per transaction.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import urllib.parse
import weakref
from typing import Any

import apsw

from .. import filenames
from ..errors import OperationalError
from ..storage import snapshot
from . import plain_open

Identity = plain_open.Identity
_SIDE = ("-wal", "-shm")

_installed = False
# The file of each APSW connection and its (device, inode), noted as it opens: a connection in
# use by another thread raises ThreadingViolationError on reading its ``filename``, and a file
# deleted and created again at the same path is another file.
_opened: weakref.WeakKeyDictionary[apsw.Connection, tuple[str, Identity | None]] = (
    weakref.WeakKeyDictionary()
)


def install() -> None:
    """Refuse, from now on, stdlib connections to files this process holds through APSW.

    Audit hooks cannot be removed, so this installs one per process; later calls do nothing.
    Python raises the event before the stdlib opens anything, from ``sqlite3.connect()`` and
    ``sqlite3.Connection()`` alike (checked on 3.10 to 3.13).  Any audit hook costs about
    0.8 us on every audited call in the process (the interpreter's side, measured with a hook
    that does nothing); our commit path makes 8 (``fcntl.fcntl``).
    """
    global _installed
    if not _installed:
        apsw.connection_hooks.append(_note_opened)
        sys.addaudithook(_audit)
        _installed = True


def _note_opened(conn: apsw.Connection) -> None:
    name = filenames.of(conn)  # in the thread opening it, so never in use elsewhere
    _opened[conn] = (name, plain_open.file_identity(name) if name else None)


def _opened_file(conn: apsw.Connection) -> tuple[str, Identity | None]:
    noted = _opened.get(conn)
    if noted is not None:
        return noted
    try:  # opened before install()
        name = filenames.of(conn)
    except apsw.ThreadingViolationError:
        return "", None
    return name, plain_open.file_identity(name) if name else None


def held() -> set[Identity]:
    """The files this process has descriptors or locks on through APSW's SQLite (connections of
    ours, those we keep after ours close, the application's own) or through sqlite_concurrent's
    own descriptors: each database, and the ``-wal`` and ``-shm`` now at its path.

    A stdlib connection opened and closed on any of them now would drop those locks.
    """
    files = {_opened_file(conn) for conn in apsw.connections()}
    found = {identity for _, identity in files if identity is not None}
    found.update(_identities([name + suffix for name, _ in files if name for suffix in _SIDE]))
    return found | snapshot.WalFiles.identities()


def check_open(database: str) -> None:
    """Refuse to open ``database`` (a path or a ``file:`` URI) while this process has it open
    through something other than APSW's SQLite.

    Descriptors on files APSW's SQLite already holds are not looked at: the audit hook has kept
    the stdlib off those since, so only the first open of a file scans the process's
    descriptors.  (APSW connections an application opens itself, beside a stdlib connection it
    opened before importing sqlite_concurrent, are the one case this cannot tell apart.)

    :raises OperationalError: descriptors on the file, its ``-wal`` or its ``-shm`` are open in
        this process and are not APSW's.
    """
    for path in _paths(database):
        files = _identities(_with_wal_files(path))
        for identity in held() & files.keys():
            del files[identity]
        found = _descriptors_on(files)
        if found:
            raise _refusal(
                f"cannot open {os.path.abspath(path)} with sqlite_concurrent: this process "
                f"already has descriptors on it that are not APSW's copy of SQLite "
                f"({_describe(found)}), from a stdlib sqlite3 connection or a file opened "
                "directly.  Two SQLite libraries in one process drop each other's POSIX locks: "
                "when those descriptors close, the kernel drops sqlite_concurrent's locks on the "
                "file too, and commits are lost.  Close the stdlib sqlite3 connections to this "
                "database first, or use sqlite_concurrent for every connection to it in this "
                "process",
                OperationalError,
            )


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audit event in the process: two string comparisons for all but ours.
    if event == "sqlite3.connect":
        _refuse_stdlib(args[0])
    elif event == "open":
        plain_open.opened(args[0], args[1])


def _refuse_stdlib(database: Any) -> None:
    if not isinstance(database, (str, bytes, os.PathLike)):
        return  # the stdlib rejects it itself
    name = os.fsdecode(database)
    for path in _paths(name):
        files = _identities(_with_wal_files(path))
        if files and not held().isdisjoint(files):
            raise _refusal(
                f"sqlite3.connect({name!r}) refused: {os.path.abspath(path)} is open in this "
                "process through sqlite_concurrent (APSW's copy of SQLite: its connections, or "
                "what it keeps open after they close).  The stdlib's sqlite3 is a second copy, "
                "and two SQLite libraries in one process drop each other's POSIX locks: closing "
                "this connection would drop sqlite_concurrent's locks on the file, and commits "
                "would be lost.  Use sqlite_concurrent.connect() for this database in this "
                "process, or the stdlib sqlite3 from another process",
                sqlite3.OperationalError,
            )


def _refusal(message: str, cls: type[sqlite3.OperationalError]) -> sqlite3.OperationalError:
    error = cls(message)
    error.sqlite_errorcode = apsw.SQLITE_CANTOPEN  # type: ignore[attr-defined]
    error.sqlite_errorname = "SQLITE_CANTOPEN"  # type: ignore[attr-defined]
    return error


def _paths(database: str) -> list[str]:
    """The files SQLite may open for ``database``: none for memory databases; for a name that
    starts with ``file:`` both its meanings, since whether it is a URI (``uri=True``) is not
    part of the audit event."""
    if database in ("", ":memory:"):
        return []
    paths = [database]
    if database.startswith("file:"):
        uri_path = _uri_path(database)
        if uri_path is not None:
            paths.append(uri_path)
    return paths


def _uri_path(uri: str) -> str | None:
    """The file a SQLite ``file:`` URI names, or None for a memory database
    (https://sqlite.org/uri.html: an authority must be empty or ``localhost``)."""
    parsed = urllib.parse.urlsplit(uri)
    params = dict(urllib.parse.parse_qsl(parsed.query))
    path = filenames.from_uri_path(parsed.path)
    if params.get("mode") == "memory" or params.get("vfs") == "memdb" or path in ("", ":memory:"):
        return None
    return path


def _with_wal_files(path: str) -> list[str]:
    return [path] + [path + suffix for suffix in _SIDE]


def _identities(paths: list[str]) -> dict[Identity, str]:
    found = {}
    for path in paths:
        identity = plain_open.file_identity(path)
        if identity is not None:
            found[identity] = path
    return found


def _descriptors_on(files: dict[Identity, str]) -> list[tuple[int, str]]:
    """(descriptor, file) for this process's descriptors on any of ``files``."""
    if not files:
        return []
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    found = []
    for entry in os.listdir(fd_dir):
        identity = plain_open.file_identity(os.path.join(fd_dir, entry))  # follows to the open file
        if identity in files:
            found.append((int(entry), files[identity]))
    return sorted(found)


def _describe(found: list[tuple[int, str]]) -> str:
    return ", ".join(f"descriptor {fd}: {os.path.basename(path)}" for fd, path in found)
