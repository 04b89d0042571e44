"""Shared-cache memory databases (``file:NAME?mode=memory&cache=shared``) on SQLite's memdb VFS.

Such a URI names one in-memory database that every connection of the process opening the same
NAME shares, and that lives while one of them is open (https://sqlite.org/inmemorydb.html,
"In-memory Databases And Shared Cache"); Django keeps its in-memory test databases this way.
APSW's SQLite is built with ``SQLITE_OMIT_SHARED_CACHE``, so each such open would give a new
empty database.  The memdb VFS shares a database among the connections of the process that name
it with a leading ``/``, and frees it when the last of them closes (``memdbClose`` in SQLite's
``src/memdb.c``): the same sharing and the same lifetime, without shared cache.

Its connections lock as separate connections to one rollback-journal database do, not with
shared cache's table locks: see README, "Limits".
"""

from __future__ import annotations

# Puts our names apart from memdb databases the application opens through APSW itself.
_PREFIX = "/sqlite_concurrent:shared-memory/"
MEMDB = "memdb"


def memdb_name(path: str, params: dict[str, str]) -> str | None:
    """The memdb name standing for the database of a ``file:`` URI, or None if it names no
    shared-cache memory database.

    ``path`` is the URI's decoded path and ``params`` its query parameters, the last of a
    repeated one winning, as in SQLite.  A memory database is shared when ``cache=shared`` and
    it is ``mode=memory`` or named ``:memory:``; one per NAME, the empty name (a temporary
    database) never (``sqlite3BtreeOpen`` in SQLite's ``src/btree.c``).  A read-only one
    (``mode=ro``) stays a private connection: it can only ever be empty.
    """
    mode = params.get("mode")
    if params.get("cache") != "shared" or not path or mode == "ro":
        return None
    if mode != "memory" and path != ":memory:":
        return None
    return _PREFIX + path
