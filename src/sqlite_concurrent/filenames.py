"""How a path on disk is named to SQLite.

Python spells a path that is not valid UTF-8 with surrogate escapes (PEP 383), which APSW
cannot encode: SQLite takes filenames as UTF-8 bytes and passes them to the OS unchanged.  A
URI filename carries any bytes, percent-encoded, so such a path is named by URI.
"""

from __future__ import annotations

import os
import urllib.parse

import apsw


def for_sqlite(
    path: str, flags: int = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
) -> tuple[str, int]:
    """``path`` and the open ``flags`` as APSW can hand them to SQLite."""
    try:
        path.encode()
    except UnicodeEncodeError:
        return uri(path), flags | apsw.SQLITE_OPEN_URI
    return path, flags


def uri(path: str, query: str = "") -> str:
    """A ``file:`` URI naming ``path`` exactly, whatever its bytes; ``query`` without ``?``."""
    return "file:" + urllib.parse.quote(os.fsencode(path)) + (f"?{query}" if query else "")


def from_uri_path(quoted: str) -> str:
    """The path a URI's (percent-encoded) path names, as Python spells it."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(quoted))


def of(conn: apsw.Connection) -> str:
    """The file ``conn``'s main database is, as Python spells it (``""`` for none)."""
    try:
        return conn.filename
    except UnicodeDecodeError:
        # APSW decodes it as strict UTF-8; SQLite hands out the bytes as they are.
        row = conn.execute(
            "SELECT CAST(file AS BLOB) FROM pragma_database_list WHERE name = 'main'"
        ).fetchone()
        return os.fsdecode(row[0]) if row and row[0] else ""


def for_overlay(path: str) -> str:
    """The name a transaction's connection (overlay VFS) gives the database at ``path``.

    The overlay reads the database through its slot, never through the name, and keeps
    journals in memory; but APSW hands a Python VFS every name as ``str``, strictly decoded.
    A path that is not UTF-8 is therefore replaced by one that names no file.
    """
    try:
        path.encode()
    except UnicodeEncodeError:
        return "/nonexistent/sqlite-concurrent-overlay.db"
    return path
