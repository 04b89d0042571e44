"""sqlite-concurrent: many processes writing one SQLite database at the same time.

``import sqlite_concurrent as sqlite3`` gives a DB-API 2.0 module whose write transactions run in
parallel across processes, on a standard SQLite file in WAL mode.
"""

from __future__ import annotations

import apsw as _apsw

from .dbapi import Connection, Cursor, connect
from .errors import (
    ConflictError,
    DatabaseError,
    DataError,
    DeadlockError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    LockTimeoutError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)

__version__ = "0.1.0"

apilevel = "2.0"
paramstyle = "qmark"
threadsafety = 1
sqlite_version = _apsw.sqlite_lib_version()

__all__ = [
    "ConflictError",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "DeadlockError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "LockTimeoutError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]
