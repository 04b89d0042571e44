"""sqlite-concurrent: many processes writing one SQLite database at the same time.

``import sqlite_concurrent as sqlite3`` gives a DB-API 2.0 module whose write transactions run in
parallel across processes, on a standard SQLite file in WAL mode.
"""

from __future__ import annotations

import contextlib as _contextlib
import datetime as _datetime
import sqlite3 as _stdlib
import time as _time
import warnings as _warnings

import apsw as _apsw

from .adaptation import (
    PrepareProtocol,
    adapt,
    adapters,
    converters,
    enable_callback_tracebacks,
    register_adapter,
    register_converter,
)
from .blob import Blob
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
from .process.foreign import install as _refuse_stdlib_on_our_files
from .row import Row

__version__ = "0.1.0"

apilevel = "2.0"
paramstyle = "qmark"
threadsafety = 1
sqlite_version = _apsw.sqlite_lib_version()
sqlite_version_info = tuple(int(x) for x in sqlite_version.split("."))
PARSE_DECLTYPES = _stdlib.PARSE_DECLTYPES
PARSE_COLNAMES = _stdlib.PARSE_COLNAMES
version = "2.6.0"  # the DB-API module version the stdlib reports
version_info = (2, 6, 0)

# The stdlib's SQLite on a file ours has open loses commits (foreign.py): refused from import on.
_refuse_stdlib_on_our_files()

# SQLite's result, authorizer-action and limit codes, under the stdlib's names.
globals().update({k: v for k, v in vars(_stdlib).items() if k.startswith("SQLITE_")})


def enable_shared_cache(enable: bool) -> None:
    """Deprecated, as in the stdlib: SQLite's shared-cache mode for connections opened after."""
    _warnings.warn(
        "enable_shared_cache is deprecated and will be removed in Python 3.12. "
        "Shared cache is strongly discouraged by the SQLite 3 documentation. "
        "If shared cache must be used, open the database in URI mode using"
        "the cache=shared query parameter.",
        DeprecationWarning,
        stacklevel=2,
    )
    # APSW's SQLite is built without shared cache (deprecated by SQLite itself).
    with _contextlib.suppress(Exception):
        _apsw.enable_shared_cache(bool(enable))


def __getattr__(name: str) -> object:
    if name == "OptimizedUnicode":
        _warnings.warn("OptimizedUnicode is deprecated; use str", DeprecationWarning, stacklevel=2)
        return str
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def complete_statement(statement: str) -> bool:
    """Whether ``statement`` holds one or more complete SQL statements."""
    if not isinstance(statement, str):
        raise TypeError("complete_statement() argument must be str")
    return _apsw.complete(statement)


# DB-API type constructors, as in the stdlib.
Binary = memoryview
Date = _datetime.date
Time = _datetime.time
Timestamp = _datetime.datetime


def DateFromTicks(ticks: float) -> _datetime.date:  # noqa: N802 - DB-API name
    return Date(*_time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> _datetime.time:  # noqa: N802 - DB-API name
    return Time(*_time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> _datetime.datetime:  # noqa: N802 - DB-API name
    return Timestamp(*_time.localtime(ticks)[:6])


__all__ = [
    "PARSE_COLNAMES",
    "PARSE_DECLTYPES",
    "Binary",
    "Blob",
    "Date",
    "DateFromTicks",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "enable_shared_cache",
    "PrepareProtocol",
    "adapt",
    "adapters",
    "complete_statement",
    "converters",
    "enable_callback_tracebacks",
    "register_adapter",
    "register_converter",
    "sqlite_version",
    "sqlite_version_info",
    "version",
    "version_info",
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
    "Row",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]
# Star imports give what the stdlib's give (it has no ``__all__``): its SQLITE_* codes too.
__all__ += sorted(name for name in globals() if name.startswith("SQLITE_"))

# Last: it re-exports every name above, as ``sqlite3.dbapi2`` does the stdlib's.
from . import dbapi2 as dbapi2  # noqa: E402
