"""Exception hierarchy.

Every class subclasses its stdlib ``sqlite3`` namesake, so existing
``except sqlite3.OperationalError:`` handlers keep catching ours (aiosqlite does the same).
"""

from __future__ import annotations

import copy
import functools
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

__all__ = [
    "ConflictError",
    "DataError",
    "DeadlockError",
    "LockTimeoutError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Warning",
]

T = TypeVar("T")


class Warning(sqlite3.Warning):
    pass


class Error(sqlite3.Error):
    pass


class InterfaceError(Error, sqlite3.InterfaceError):
    pass


class DatabaseError(Error, sqlite3.DatabaseError):
    pass


class DataError(DatabaseError, sqlite3.DataError):
    pass


class OperationalError(DatabaseError, sqlite3.OperationalError):
    pass


class IntegrityError(DatabaseError, sqlite3.IntegrityError):
    pass


class InternalError(DatabaseError, sqlite3.InternalError):
    pass


class ProgrammingError(DatabaseError, sqlite3.ProgrammingError):
    pass


class NotSupportedError(DatabaseError, sqlite3.NotSupportedError):
    pass


class ConflictError(OperationalError):
    """A transaction lost a race with another one and was rolled back.

    :ivar table: the table holding the contested row (``None`` for whole-database conflicts).
    :ivar key: the primary key (or rowid) values of the row, as a tuple.
    :ivar kind: ``"data"`` (row changed since the snapshot), ``"notfound"`` (row deleted),
        ``"conflict"`` (key already exists), ``"constraint"``, ``"foreign_key"`` or
        ``"schema"`` (the schema changed since the snapshot).
    :ivar retryable: whether running the transaction again can succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        key: tuple[Any, ...] | None = None,
        kind: str = "data",
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.key = key
        self.kind = kind
        self.retryable = retryable
        self.sqlite_errorcode = apsw.SQLITE_BUSY
        self.sqlite_errorname = "SQLITE_BUSY"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_conflict, (self.args[0], self.table, self.key, self.kind, self.retryable))


class DeadlockError(ConflictError):
    """Transactions waited for each other in a cycle; this one (the youngest) was rolled back.

    :ivar resource: the resource this transaction was waiting for.
    :ivar cycle: the transaction ids in the cycle.
    """

    def __init__(self, message: str, *, resource: str = "", cycle: tuple[int, ...] = ()) -> None:
        super().__init__(message, kind="deadlock")
        self.resource = resource
        self.cycle = cycle

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_deadlock, (self.args[0], self.resource, self.cycle))


def _rebuild_deadlock(message: str, resource: str, cycle: tuple[int, ...]) -> DeadlockError:
    return DeadlockError(message, resource=resource, cycle=cycle)


class LockTimeoutError(OperationalError):
    """A lock was still held by another transaction when the connection's timeout ran out.

    :ivar resource: the lock resource (``table:<name>``, ``row:<table>:<rowid>``, ...).
    :ivar holder_pid: the pid of a process holding it.
    """

    def __init__(self, message: str, *, resource: str = "", holder_pid: int = 0) -> None:
        super().__init__(message)
        self.resource = resource
        self.holder_pid = holder_pid
        self.sqlite_errorcode = apsw.SQLITE_BUSY
        self.sqlite_errorname = "SQLITE_BUSY"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_timeout, (self.args[0], self.resource, self.holder_pid))


def _rebuild_timeout(message: str, resource: str, holder_pid: int) -> LockTimeoutError:
    return LockTimeoutError(message, resource=resource, holder_pid=holder_pid)


def still_aborted(error: OperationalError, advice: str) -> OperationalError:
    """The error that rolled a transaction back, again, for a statement or commit that came
    after it: same class and attributes (a retry loop catches it as it caught the first)."""
    again = copy.copy(error)
    again.args = (f"the transaction was rolled back by an earlier error ({error}); {advice}",)
    again.__traceback__ = None
    return again


def _rebuild_conflict(
    message: str, table: Any, key: Any, kind: str, retryable: bool
) -> ConflictError:
    return ConflictError(message, table=table, key=key, kind=kind, retryable=retryable)


# APSW raises its own classes; map each to the class the stdlib raises for the same
# SQLite result code (CPython Modules/_sqlite/util.c, _pysqlite_seterror).
_APSW_TO_DBAPI: dict[type[BaseException], type[Error]] = {
    apsw.ConstraintError: IntegrityError,
    apsw.MismatchError: IntegrityError,
    apsw.TooBigError: DataError,
    apsw.CorruptError: DatabaseError,
    apsw.NotADBError: DatabaseError,
    apsw.FormatError: DatabaseError,
    apsw.InternalError: InternalError,
    apsw.NoMemError: InternalError,
    apsw.RangeError: ProgrammingError,
    apsw.BindingsError: ProgrammingError,
    apsw.MisuseError: ProgrammingError,
    apsw.ConnectionClosedError: ProgrammingError,
    apsw.CursorClosedError: ProgrammingError,
    apsw.ThreadingViolationError: ProgrammingError,
    apsw.IncompleteExecutionError: ProgrammingError,
    apsw.ExecutionCompleteError: ProgrammingError,
}


def translate(exc: BaseException) -> BaseException:
    """Return the DB-API exception the stdlib would raise for an APSW exception."""
    if isinstance(exc, Error):
        return exc
    cls: type[Error] = OperationalError
    for apsw_cls in type(exc).__mro__:
        if apsw_cls in _APSW_TO_DBAPI:
            cls = _APSW_TO_DBAPI[apsw_cls]
            break
    else:
        if not isinstance(exc, apsw.Error):
            return exc
    message = str(exc)
    # APSW prefixes messages with its class name ("SQLError: near ..."); the stdlib does not.
    head, sep, tail = message.partition(": ")
    if sep and head.endswith("Error"):
        message = tail
    lock_database = getattr(exc, "lock_database", None)  # set by LockDB
    if lock_database is not None:
        message = f"{message} (lock database {lock_database})"
    new = cls(message)
    code = getattr(exc, "extendedresult", None) or getattr(exc, "result", None)
    if isinstance(code, int):
        new.sqlite_errorcode = code  # type: ignore[attr-defined]
        new.sqlite_errorname = apsw.mapping_extended_result_codes.get(  # type: ignore[attr-defined]
            code, apsw.mapping_result_codes.get(code & 0xFF, "SQLITE_ERROR")
        )
    return new


def sqlite_error(message: str) -> OperationalError:
    """An error SQLite reports as ``SQLITE_ERROR``, raised by us where SQLite would raise it:
    with the code and name the stdlib's shows."""
    error = OperationalError(message)
    error.sqlite_errorcode = apsw.SQLITE_ERROR  # type: ignore[attr-defined]
    error.sqlite_errorname = "SQLITE_ERROR"  # type: ignore[attr-defined]
    return error


def from_os_error(exc: OSError, near: str) -> OperationalError:
    """The stdlib's class for a file a sidecar of the database ``near`` could not be used
    through: the file (where the OS names it) and the OS's reason."""
    where = exc.filename if exc.filename is not None else f"a file of {near}"
    return OperationalError(f"{exc.strerror or exc}: {where}")


def surfaced(method: Callable[..., T]) -> Callable[..., T]:
    """Wrap a public method of an object with a ``path`` so that nothing but the stdlib's
    classes leaves it: APSW's exceptions become their stdlib class (:func:`translate`), an
    ``OSError`` on one of our files an :class:`OperationalError` naming it."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except apsw.Error as e:
            raise translate(e) from e
        except OSError as e:
            raise from_os_error(e, getattr(self, "path", "the database")) from e

    return wrapper
