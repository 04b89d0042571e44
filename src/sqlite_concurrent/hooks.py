"""What user code plugs into SQLite: functions, aggregates, window functions, collations, the
authorizer, the progress handler, the trace callback and limits (as in the stdlib).

A connection of ours runs statements on several SQLite connections, so each registration is
kept and replayed on every connection a user statement may run on, now and when opened later.
Errors raised by user callbacks surface as the stdlib reports them.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
import types
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import apsw

from . import adaptation
from .connstate import ConnectionState
from .engine.authorizer import Denied
from .errors import DataError, OperationalError, ProgrammingError, translate

if TYPE_CHECKING:
    from .txn_connection import TransactionConnection

_SQL_TYPES = (type(None), int, float, str, bytes, bytearray, memoryview)
_INT64 = (-(2**63), 2**63 - 1)


def report_unraisable(exc: BaseException, callback: Any = None) -> None:
    """Report a callback's exception through ``sys.unraisablehook`` when the application asked
    for callback tracebacks (``enable_callback_tracebacks``), as the stdlib does."""
    if not adaptation.callback_tracebacks:
        return
    hook = sys.unraisablehook
    if hook is sys.__unraisablehook__:
        # The default hook only takes its own (unconstructible) argument type; print as it would.
        print(f"Exception ignored in: {callback!r}", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        return
    hook(
        types.SimpleNamespace(
            exc_type=type(exc),
            exc_value=exc,
            exc_traceback=exc.__traceback__,
            err_msg=None,
            object=callback,
        )
    )


def _result(value: Any, callback: Any) -> Any:
    """A callback's value as SQLite takes it, or the error the stdlib reports for it."""
    try:
        if not isinstance(value, _SQL_TYPES):
            raise TypeError(f"unsupported result type {type(value).__name__}")
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        if isinstance(value, str):
            value.encode()
        if isinstance(value, memoryview) and not value.c_contiguous:
            raise BufferError("underlying buffer is not C-contiguous")
    except OverflowError as e:
        report_unraisable(e, callback)
        raise DataError("string or blob too big") from None
    except (TypeError, UnicodeEncodeError, BufferError) as e:
        report_unraisable(e, callback)
        raise OperationalError("user-defined function raised exception") from None
    return value


def _function(func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            value = func(*args)
        except MemoryError as e:
            report_unraisable(e, func)
            raise
        except OverflowError as e:
            report_unraisable(e, func)
            raise DataError("string or blob too big") from None
        except Exception as e:
            report_unraisable(e, func)
            raise OperationalError("user-defined function raised exception") from None
        return _result(value, func)

    return call


class _Aggregate:
    """The stdlib's aggregate and window protocols (``finalize``; instances made at the first
    step; no rows means NULL) on APSW's (``final``)."""

    def __init__(self, cls: Any, window: bool = False) -> None:
        self._cls = cls
        self._window = window
        self._inner: Any = None

    def _call(self, method: str, *args: Any) -> Any:
        if self._inner is None:
            try:
                self._inner = self._cls()
            except Exception as e:
                report_unraisable(e, self._cls)
                raise OperationalError(
                    "user-defined aggregate's '__init__' method raised error"
                ) from None
        fn = getattr(self._inner, method, None)
        if fn is None:
            error = AttributeError(f"'{self._cls.__name__}' object has no attribute '{method}'")
            report_unraisable(error, self._cls)
            raise OperationalError(f"user-defined aggregate's '{method}' method not defined")
        try:
            return fn(*args)
        except Exception as e:
            report_unraisable(e, self._cls)
            raise OperationalError(
                f"user-defined aggregate's '{method}' method raised error"
            ) from None

    def step(self, *args: Any) -> None:
        self._call("step", *args)

    def inverse(self, *args: Any) -> None:
        self._call("inverse", *args)

    def value(self) -> Any:
        return _result(self._call("value"), self._cls)

    def final(self) -> Any:
        if self._inner is None:
            return None
        if self._window:
            # SQLite drops a window function's final-step error; the stdlib only reports it.
            try:
                return self._inner.finalize()
            except Exception as e:
                report_unraisable(e, self._cls)
                return None
        return _result(self._call("finalize"), self._cls)


def _authorizer(
    user: Callable[..., Any], ours: Callable[..., int] | None, denied: Denied | None = None
) -> Callable[..., int]:
    def authorize(action: int, p1: Any, p2: Any, db: Any, trigger: Any) -> int:
        if denied is not None and denied.muted:
            return apsw.SQLITE_OK  # our own machinery's statement, not the application's
        try:
            verdict = user(action, p1, p2, db, trigger)
        except Exception as e:
            report_unraisable(e, user)
            return apsw.SQLITE_DENY
        if type(verdict) is not int or verdict not in (
            apsw.SQLITE_OK,
            apsw.SQLITE_DENY,
            apsw.SQLITE_IGNORE,
        ):
            return apsw.SQLITE_DENY
        if verdict != apsw.SQLITE_OK or ours is None:
            return verdict
        return ours(action, p1, p2, db, trigger)

    return authorize


class Hooks:
    """Mixin for :class:`~.dbapi.Connection`; it provides the connections and ``_check``."""

    _reader: apsw.Connection
    _merger: apsw.Connection
    _private: apsw.Connection | None
    _snapshot_conn: apsw.Connection | None
    _txn_connection: TransactionConnection
    _registrations: list[Callable[[apsw.Connection], None]]
    _trace: Callable[[str], Any] | None
    _user_on_merger: bool
    _max_sql_length: int
    _user_authorizer: Callable[..., Any] | None
    _reader_authorizer: Callable[..., int] | None
    _txn_authorizer: Callable[..., int] | None
    _state: ConnectionState
    _statement_traced: tuple[str, str, int | None] | None

    def _check(self) -> None:
        raise NotImplementedError

    def _connections(self) -> list[apsw.Connection]:
        conns = [self._reader, self._merger, self._snapshot_conn, self._txn_connection.conn]
        return list({id(c): c for c in conns if c is not None}.values())

    def _register(self, register: Callable[[apsw.Connection], None]) -> None:
        self._check()
        self._registrations.append(register)
        for conn in self._connections():
            try:
                register(conn)
            except apsw.Error as e:
                raise OperationalError(str(translate(e))) from e

    def create_function(
        self, name: str, narg: int, func: Callable[..., Any] | None, *, deterministic: bool = False
    ) -> None:
        """As in the stdlib; ``func=None`` removes the function."""
        self._check()
        if narg < -1 or narg > 127:
            raise OperationalError("Error creating function")
        wrapped = _function(func) if func is not None else None
        self._register(
            lambda conn: conn.create_scalar_function(
                name, wrapped, narg, deterministic=deterministic
            )
        )

    def create_aggregate(self, name: str, n_arg: int, aggregate_class: Any) -> None:
        """As in the stdlib: ``aggregate_class()`` has ``step(*args)`` and ``finalize()``."""
        self._check()
        if n_arg < -1 or n_arg > 127:
            raise OperationalError("Error creating aggregate")
        factory = (lambda: _Aggregate(aggregate_class)) if aggregate_class is not None else None
        self._register(lambda conn: conn.create_aggregate_function(name, factory, n_arg))

    def create_window_function(self, name: str, num_params: int, aggregate_class: Any) -> None:
        """As in the stdlib: ``step``, ``inverse``, ``value`` and ``finalize`` methods."""
        self._check()
        if num_params < -1 or num_params > 127:
            raise ProgrammingError("Error creating window function")
        factory = (
            (lambda: _Aggregate(aggregate_class, window=True))
            if aggregate_class is not None
            else None
        )
        self._register(lambda conn: conn.create_window_function(name, factory, num_params))

    def create_collation(self, name: str, callable: Callable[[str, str], int] | None) -> None:
        self._check()
        if callable is not None and not builtins_callable(callable):
            raise TypeError("parameter must be callable")

        def compare(a: str, b: str) -> int:
            result = callable(a, b)  # type: ignore[misc]
            if not isinstance(result, int):
                raise OperationalError("collation function must return an int")
            return max(-1, min(1, result))

        self._register(
            lambda conn: conn.create_collation(name, compare if callable is not None else None)
        )

    def set_authorizer(self, authorizer_callback: Callable[..., Any] | None) -> None:
        """As in the stdlib.  It sees the application's statements only, never ours."""
        self._check()
        if authorizer_callback is not None and not builtins_callable(authorizer_callback):
            raise TypeError("parameter must be callable")
        self._user_authorizer = authorizer_callback
        self._install_authorizers()

    def _install_authorizers(self) -> None:
        user = self._user_authorizer
        if self._private is not None:
            self._private.authorizer = _authorizer(user, None) if user is not None else None
            return
        self._reader.authorizer = self._authorizer_for(self._reader_authorizer)
        if self._txn_connection.conn is not None:
            self._txn_connection.conn.authorizer = self._authorizer_for(self._txn_authorizer)
        self._merger.authorizer = self._merger_authorizer()

    def _merger_authorizer(self) -> Callable[..., int] | None:
        """The application's authorizer for its own statements on the merger, after the
        connection state's probe (:mod:`.connstate`) when that listens."""
        user = self._user_authorizer
        hear = self._state.hear if self._state.listening else None
        if user is None and hear is None:
            return None
        checked = _authorizer(user, None) if user is not None else None
        # Weakly: the merger, which keeps this, belongs to the connection (no reference cycle).
        connection = weakref.ref(self)

        def on_merger(*args: Any) -> int:
            if hear is not None and hear(*args):
                return apsw.SQLITE_OK
            conn = connection()
            if checked is not None and conn is not None and conn._user_on_merger:
                return checked(*args)
            return apsw.SQLITE_OK

        return on_merger

    def _authorizer_for(self, ours: Callable[..., int] | None) -> Callable[..., int] | None:
        user = self._user_authorizer
        return ours if user is None else _authorizer(user, ours, self._denied)

    def set_progress_handler(self, progress_handler: Callable[[], Any] | None, n: int) -> None:
        """As in the stdlib: a true result aborts the statement (``OperationalError``)."""
        self._check()
        if progress_handler is None:
            self._register(lambda conn: conn.set_progress_handler(None))
            return

        def handler_for(conn: apsw.Connection) -> Callable[[], bool]:
            ours = conn is self._snapshot_conn or (conn is self._merger and self._private is None)

            def handler() -> bool:
                if ours and not self._user_on_merger:
                    return False  # never abort our own merge or snapshot pin
                try:
                    return bool(progress_handler())
                except Exception as e:
                    report_unraisable(e, progress_handler)
                    return True

            return handler

        self._register(lambda conn: conn.set_progress_handler(handler_for(conn), n))

    def set_trace_callback(self, trace_callback: Callable[[str], Any] | None) -> None:
        """As in the stdlib, ``trace_callback(sql)`` hears what the stdlib's connection would
        send to SQLite: each statement the application runs, with its parameters filled in
        (heard again for each trigger program it starts, as SQLite reports those), and the
        ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` of its transactions.  The SQL we send for our
        own purposes (a commit's merge, a snapshot's pin) is not heard.  ``None`` turns
        tracing off."""
        self._check()
        self._trace = trace_callback
        mask = 0 if trace_callback is None else apsw.SQLITE_TRACE_STMT
        handler = None if trace_callback is None else self._on_statement_event
        self._register(lambda conn: conn.trace_v2(mask, handler))

    def _trace_statement(self, cursor: apsw.Cursor, sql: str) -> None:
        """Trace the application's statement ``cursor`` is starting, as the stdlib does."""
        try:
            expanded = cursor.expanded_sql
        except apsw.Error:
            # Past SQLITE_LIMIT_LENGTH SQLite cannot fill the parameters in: the stdlib reports
            # that and traces the statement as written.
            report_unraisable(
                DataError("Expanded SQL string exceeds the maximum string length"), self._trace
            )
            expanded = sql
        self._statement_traced = (expanded, sql, None)
        self._traced(expanded)

    def _on_statement_event(self, event: dict[str, Any]) -> None:
        # SQLite reports each trigger program a statement starts; the stdlib traces the
        # statement's own SQL for each.  Every other event is a statement we run ourselves
        # (some while the application's runs), or the application's, already traced by
        # ``_trace_statement``: that one's id tells its trigger programs from the others.
        current = self._statement_traced
        if current is None:
            return
        expanded, sql, statement_id = current
        if statement_id is None:
            if not event["trigger"] and event["sql"] == sql:
                self._statement_traced = (expanded, sql, event["id"])
        elif event["trigger"] and event["id"] == statement_id:
            self._traced(expanded)

    def _trace_control(self, sql: str) -> None:
        """Trace the ``BEGIN``/``COMMIT``/``ROLLBACK`` the stdlib's connection would run."""
        if self._trace is not None:
            self._traced(sql)

    def _traced(self, sql: str) -> None:
        callback = self._trace
        if callback is None:
            return
        try:
            callback(sql)
        except Exception as e:
            # The stdlib never lets a trace callback fail a statement.
            report_unraisable(e, callback)

    def setlimit(self, category: int, limit: int) -> int:
        """Set a SQLite limit on every connection used; returns the previous value."""
        self._check()
        old = self.getlimit(category)
        for conn in self._connections():
            conn.limit(category, limit)
        self._registrations.append(lambda conn: conn.limit(category, limit))
        if category == apsw.SQLITE_LIMIT_SQL_LENGTH:
            self._max_sql_length = self.getlimit(category)
        return old

    def getlimit(self, category: int) -> int:
        self._check()
        try:
            value = self._reader.limit(category, -1)
        except (apsw.Error, ValueError, OverflowError) as e:
            raise ProgrammingError("'category' is out of bounds") from e
        if value < 0:
            raise ProgrammingError("'category' is out of bounds")
        return value

    def interrupt(self) -> None:
        """Abort the statements running on this connection (from another thread)."""
        if getattr(self, "_closed", True):
            raise ProgrammingError("Cannot operate on a closed database.")
        for conn in self._connections():
            with contextlib.suppress(apsw.Error):
                conn.interrupt()


builtins_callable = callable
