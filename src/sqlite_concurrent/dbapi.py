"""The DB-API 2.0 ``Connection`` that behaves like the stdlib ``sqlite3`` one, and ``connect``.

The connection is the face: the stdlib's methods and checks.  Under it (docs/architecture.md,
"One connection's parts"): a backend (:mod:`.backends`: the shared file, or one private SQLite
connection), the router that sends each statement where it can run (:mod:`.routing`), the
runner that runs it as the stdlib would (:mod:`.running`), the open transaction and its life
(:mod:`.transactions`), the transaction connection (:mod:`.txn_connection`) and the schema
changes carried between its SQLite connections (:mod:`.schemas`).  It keeps the handles its
callbacks go on (a reader for autocommit reads, a snapshot pinner, a merger) and what the
application set on it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import sqlite3 as _stdlib
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import apsw

from . import (
    adaptation,
    backends,
    backup,
    connstate,
    errors,
    running,
    serialization,
    statements,
)
from .blob import Blob, OpenBlobs
from .commit.checkpoint import DEFAULT_CHECKPOINT_WAIT, DEFAULT_WAL_LIMIT
from .cursor import Cursor
from .engine import (
    authorizer,
    foreign_keys,
    rerun,
    ways,
)
from .engine.database import SharedDatabase
from .errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    from_os_error,
    surfaced,
    translate,
)
from .hooks import Hooks
from .locking import levels, locks, oslock
from .options import Options
from .process import exiting, holding
from .routing import Router
from .schemas import Schemas
from .transactions import Transactions
from .txn_connection import TransactionConnection

LOCK_LEVELS = levels.NAMES

T = TypeVar("T")


class Connection(Hooks):
    """A connection whose write transactions run in parallel with other processes' ones.

    Use :func:`sqlite_concurrent.connect` to make one.
    """

    # DB-API optional extension: the exception classes as connection attributes.
    Warning = errors.Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    _closed: bool  # absent until __init__ runs: "Base Connection.__init__ not called"
    _backend: backends.PrivateBackend | backends.SharedBackend  # once open
    _db: SharedDatabase  # the file under a connection to a shared database, once open

    def __init__(
        self,
        database: str | bytes | os.PathLike[str],
        timeout: float = 30.0,
        detect_types: int = 0,
        isolation_level: str | None = "",
        check_same_thread: bool = True,
        factory: Any = None,
        cached_statements: int = 128,
        uri: bool = False,
        *,
        lock_level: str = "row",
        wal_limit: int = DEFAULT_WAL_LIMIT,
        checkpoint_wait: float = DEFAULT_CHECKPOINT_WAIT,
        escalate_at: int = locks.DEFAULT_ESCALATE_AT,
        group_commit: bool | None = None,
        row_lock_delay: float = locks.DEFAULT_ROW_LOCK_DELAY,
        mode: str | None = None,
    ) -> None:
        if exiting.pending():
            _let_go_dropped_connections()
        if getattr(self, "_closed", None) is not None:
            # Run again, as the stdlib allows: the open connection closes, and this one is
            # uninitialised until the new database opens.
            self._close_for_init()
            del self._closed
        self._options = options = Options.of(
            timeout=timeout,
            lock_level=lock_level,
            wal_limit=wal_limit,
            checkpoint_wait=checkpoint_wait,
            escalate_at=escalate_at,
            group_commit=group_commit,
            row_lock_delay=row_lock_delay,
            mode=mode,
        )
        path, private = backends.target(database, uri)
        self.mode = options.mode
        self.detect_types = int(detect_types)
        self._table_sets = locks.TableSets()
        self._closed = True  # until fully open, so __del__ and close() are safe
        # Links resolved, as SQLite resolves them to place -wal and -shm: our sidecars go beside
        # the same file, and every name for the database finds the same -locks.
        self.path = path if private is not None else os.path.realpath(path)
        # A database no other process can reach (":memory:", "", a memory or read-only URI):
        # its one stock connection (backends.py).
        self._private: apsw.Connection | None = None
        self.lock_level = options.level.name
        self._level = options.level
        self.timeout = options.timeout
        self._isolation_level: str | None = None
        self.isolation_level = isolation_level  # validated by the setter
        self.row_factory: Callable[[Cursor, tuple[Any, ...]], Any] | None = None
        self._check_same_thread = check_same_thread
        self._thread = threading.get_ident()
        self._init_transactions()
        self._init_statements()
        self._opened = holding.Handles()
        self._open_blobs = OpenBlobs()
        self._holding: holding.Holding | None = None  # what the process holds for the file
        self._open_or_undo(private)
        self._closed = False
        self._backend.track(self)

    def _init_transactions(self) -> None:
        self._txns = Transactions(self, self.mode)
        # Transactions run each way since the connection opened (for ``bench`` and ``status``).
        self.ways: collections.Counter[str] = self._txns.chooser.counts
        self._txn_connection = TransactionConnection(self)
        # Cursors part-way through a SELECT on the reader: its read transaction stays open
        # until they finish, so after our own commit they are read to the end, letting the
        # next read see that commit (the stdlib's single connection always sees its writes).
        self._reader_cursors: weakref.WeakSet[Cursor] = weakref.WeakSet()

    def _open_or_undo(self, private: backends.Private | None) -> None:
        """Open the database; if that fails, let go of what was opened and leave the connection
        as the stdlib's is after a failed ``__init__``."""
        try:
            if private is not None:
                self._open_private(private)
            else:
                self._open_shared()
        except BaseException as e:
            holding.close_all(self._opened)  # a shared database let go of the rest itself
            if isinstance(e, OSError):
                raise from_os_error(e, self.path) from e
            del self._closed  # uninitialised, as the stdlib's is after a failed __init__
            if isinstance(e, apsw.Error):
                raise translate(e) from e
            raise

    def _init_statements(self) -> None:
        """What running statements keeps: results the stdlib reports, callbacks the
        application registered, and what was learnt of statements already run."""
        self._last_insert_rowid = 0
        self._total_changes = 0
        self._changes = 0  # rows the last INSERT, UPDATE or DELETE changed (SQL's changes())
        # PRAGMA count_changes is on: DML returns its count as a row (``running``).
        self._count_changes = False
        self.text_factory: Any = str
        self._trace: Callable[[str], Any] | None = None
        self._user_on_merger = False  # a statement of the application runs on the merger
        self._statement_traced: tuple[str, str, int | None] | None = None  # see hooks
        self._state = connstate.ConnectionState()  # TEMP objects and attached databases
        # User functions, aggregates and collations: replayed on every connection we open.
        self._registrations: list[Callable[[apsw.Connection], None]] = []
        self._connection_pragmas: list[str] = []
        self._table_shapes: dict[Any, Any] = {}
        self._denied = authorizer.Denied()
        self._runner = running.StatementRunner(self, self._denied)
        self._schemas = Schemas(self, self._runner)
        self._router = Router(self, self._runner, self._txns, self._schemas)
        self._max_sql_length = 1_000_000_000  # SQLite's default SQLITE_LIMIT_SQL_LENGTH
        self._user_authorizer: Callable[..., Any] | None = None
        self._reader_authorizer: Callable[..., int] | None = authorizer.read_only(self._denied)
        self._txn_authorizer: Callable[..., int] | None = authorizer.in_transaction(
            self._denied, locks.authorizer_hook(self._table_sets)
        )

    # -- opening and closing ------------------------------------------------------------

    def _open_private(self, private: backends.Private) -> None:
        backend = self._backend = backends.PrivateBackend.open(self, private)
        self._private = self._reader = self._merger = backend.conn
        self._snapshot_conn: apsw.Connection | None = None

    def _open_shared(self) -> None:
        backend = self._backend = backends.SharedBackend(self)
        db = backend.open(
            self,
            wal_limit=self._options.wal_limit,
            checkpoint_wait=self._options.checkpoint_wait,
            group_commit=self._options.group_commit,
        )
        try:
            db.reader.authorizer = self._authorizer_for(self._reader_authorizer)
            self._deferral = foreign_keys.Deferral(db.reader, self._denied)
            self._count_in_sql(db)
        except BaseException:
            db.abandon()
            raise
        self._db = self._txns.db = db
        self._holding = db.holding
        self._merger, self._reader, self._snapshot_conn = db.merger, db.reader, db.snapshot_conn
        self._txns.chooser.hot = ways.hot(self.path)

    def _count_in_sql(self, db: SharedDatabase) -> None:
        """SQL's ``total_changes()`` and ``changes()`` answer for the connection, as on the
        stdlib's one SQLite connection.  Ours runs its statements on several, each counting
        only its own; the merger also counts the merges it applies, and the reader runs no
        DML."""
        me = exiting.weak_proxy(self)

        def total_changes(*_: Any) -> int:
            return me._total_changes

        def changes(*_: Any) -> int:
            return me._changes

        def register(conn: apsw.Connection) -> None:
            if conn is not me._private:  # a private one counts everything itself
                conn.create_scalar_function("total_changes", total_changes, 0)
                conn.create_scalar_function("changes", changes, 0)

        self._registrations.append(register)
        register(db.reader)
        register(db.merger)

    @surfaced
    def close(self) -> None:
        """Close the connection; an open transaction is rolled back, as in the stdlib.

        Closing the process's last connection to the database lets go of everything the process
        holds for it (see :mod:`.holding`): unless another process has it open, the database
        file then holds every commit, as after the stdlib's last close.  A connection inherited
        across fork() closes quietly, leaving all of it to the process that opened it.
        """
        if self._initialised_closed():
            return
        if self._inherited():
            self._closed = True
            holding.settle()
            return
        self._check_thread()
        self._close_backend()

    def _close_at_exit(self) -> None:
        """``close`` at interpreter exit (exiting.py), from whichever thread runs it."""
        if not self._closed and not self._inherited():
            self._close_backend()

    def _close_backend(self) -> None:
        try:
            self._backend.roll_back()
        finally:
            self._closed = True
            self._leave()

    def _close_for_init(self) -> None:
        if self._private is not None and not self._closed:
            # As sqlite3_close_v2, which the stdlib closes with: cursors still reading keep
            # the database until they are done; SQLite closes it when the last one goes.
            self._closed = True
            return
        for cursor in list(self._reader_cursors):
            cursor._materialise()  # the rows they would still have read, as above
        self.close()

    def _leave(self) -> None:
        """Let go of the database, as the last step of ``close`` does."""
        try:
            self._backend.leave()
        finally:
            self._holding = None

    def _inherited(self) -> bool:
        return self._holding is not None and self._holding.inherited

    def __del__(self) -> None:
        # One inherited across fork() is its parent's to close.
        if not getattr(self, "_closed", True) and not self._inherited():
            leftover = self._backend.leftover
            if leftover is not None:
                if self._txns.txn is None and self._txns.exclusive is None:
                    leftover.idle = True
                else:
                    # Closed at the next connect(), its transaction rolled back and its locks
                    # released: collection may come inside any of our critical sections.
                    leftover.closing = True
                    exiting.close_later(self)
            warnings.warn(
                f"unclosed sqlite_concurrent connection to {self.path}",
                ResourceWarning,
                stacklevel=1,
            )

    # -- checks ---------------------------------------------------------------------------

    def _check_thread(self) -> None:
        if self._check_same_thread and threading.get_ident() != self._thread:
            raise ProgrammingError(
                "SQLite objects created in a thread can only be used in that same thread. "
                f"The object was created in thread id {self._thread} and this is thread id "
                f"{threading.get_ident()}."
            )

    def _initialised_closed(self) -> bool:
        closed = getattr(self, "_closed", None)
        if closed is None:
            raise ProgrammingError("Base Connection.__init__ not called.")
        return bool(closed)

    def _check_open(self) -> None:
        """The stdlib's check of attributes that any thread may read."""
        if self._initialised_closed():
            raise ProgrammingError("Cannot operate on a closed database.")

    def _check(self) -> None:
        # ``_check_open``, inlined: every statement comes through here.
        try:
            closed = self._closed
        except AttributeError:
            closed = None
        if closed is not False:
            if closed is None:
                raise ProgrammingError("Base Connection.__init__ not called.")
            raise ProgrammingError("Cannot operate on a closed database.")
        held = self._holding
        if held is not None and held.inherited:
            raise ProgrammingError(
                f"this connection was opened by process {held.pid}, and this process "
                f"({os.getpid()}) is a fork of it: a SQLite connection cannot be used across "
                "fork() (https://sqlite.org/howtocorrupt.html, section 2.6); open a new "
                "connection in this process"
            )
        if self._check_same_thread and threading.get_ident() != self._thread:
            self._check_thread()

    # -- transactions ---------------------------------------------------------------------

    @property
    def isolation_level(self) -> str | None:
        self._check_open()
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        """As in the stdlib: validated, and ``None`` (autocommit) commits what is open."""
        self._initialised_closed()
        if value is not None and not isinstance(value, str):
            raise TypeError("isolation_level must be str or None")
        if value is not None and str.upper(value) not in _LEVELS:
            raise ValueError(
                "isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'"
            )
        if value is None and not self._closed and self._in_txn():
            self.commit()
        self._isolation_level = value if value is None else str.upper(value)

    @property
    def in_transaction(self) -> bool:
        self._check()
        return self._in_txn()

    def _in_txn(self) -> bool:
        return self._backend.in_transaction()

    @surfaced
    def commit(self) -> None:
        """Merge the open transaction into the database.

        :raises ConflictError: another transaction committed a conflicting change first; this
            one was rolled back.
        """
        self._check()
        self._backend.end(commit=True)

    @surfaced
    def rollback(self) -> None:
        self._check()
        self._backend.end(commit=False)

    def __enter__(self) -> Connection:
        self._check()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                if self._in_txn():
                    self.rollback()
                raise
        else:
            self.rollback()

    def transact(self, fn: Callable[..., T], *args: Any, retries: int = 10, **kwargs: Any) -> T:
        """Run ``fn(self, *args, **kwargs)`` in a transaction and commit it.

        A :class:`ConflictError` rolls back and runs ``fn`` again after a jittered backoff, up to
        ``retries`` more times; then it propagates.

        :returns: what ``fn`` returned in the attempt that committed.
        """
        self._check()
        if self._in_txn():
            raise ProgrammingError("transact() cannot run inside an open transaction")
        if retries < 0:
            raise ProgrammingError("retries must be >= 0")
        return self._txns.retrying(functools.partial(fn, self, *args, **kwargs), retries)

    transaction = transact

    # -- blobs, dumping and backing up -------------------------------------------------------

    @surfaced
    def blobopen(
        self, table: str, column: str, row: int, /, *, readonly: bool = False, name: str = "main"
    ) -> Blob:
        """As in the stdlib: a file-like, indexable view of one BLOB value."""
        self._check()
        return Blob._open_on(self, table, column, row, readonly, name)

    def iterdump(self) -> Iterator[str]:
        """The database as SQL text, as the stdlib dumps it, without our commit markers."""
        self._check()  # now, not at the first line: this is not a generator
        return serialization.iterdump(self)

    @surfaced
    def serialize(self, *, name: str = "main") -> bytes:
        """As in the stdlib: database ``name`` as bytes, as this connection sees it (with its
        open transaction), in rollback-journal mode so that any ``deserialize`` can open it."""
        self._check()
        return serialization.serialize(self, name)

    @surfaced
    def deserialize(self, data: Any, /, *, name: str = "main") -> None:
        """As in the stdlib: this connection goes on with an in-memory database holding
        ``data``; the file, and other connections to it, are untouched."""
        self._check()
        serialization.deserialize(self, data, name)

    @surfaced
    def backup(
        self,
        target: Any,
        *,
        pages: int = -1,
        progress: Callable[[int, int, int], Any] | None = None,
        name: str = "main",
        sleep: float = 0.250,
    ) -> None:
        """Copy this database into ``target`` (a stdlib connection or one of ours), as the
        stdlib's ``backup`` does.  Into one of ours it is an exclusive operation there."""
        self._check()
        if not isinstance(target, (Connection, _stdlib.Connection)):
            kind = type(target).__name__
            raise TypeError(f"backup() argument 1 must be a Connection, not {kind}")
        backup.run(self, target, pages=pages, progress=progress, name=name, sleep=sleep)

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted through this connection since it opened."""
        self._check()
        if self._txns.script is not None:
            self._txns.replays.observe()
        return self._total_changes

    # -- executing ----------------------------------------------------------------------------

    @surfaced
    def executescript(self, sql_script: str, *, cursor: Cursor | None = None) -> Cursor:
        """As in the stdlib: commit any open transaction, then run each statement as it
        comes (a SELECT to its last row), in autocommit mode unless the script says BEGIN."""
        self._check()
        if not isinstance(sql_script, str):
            raise TypeError("script argument must be unicode.")
        if "\0" in sql_script:
            raise ValueError("the script contains a null character")
        sql_script.encode()  # UnicodeEncodeError for lone surrogates, as the stdlib's
        if len(sql_script) > self.getlimit(apsw.SQLITE_LIMIT_SQL_LENGTH):
            raise DataError("query string is too large")
        self.commit()
        if cursor is None:
            cursor = Cursor(self)
        saved, self.isolation_level = self.isolation_level, None
        try:
            for statement in statements.split(sql_script):
                self._execute(cursor, statement, (), many=False)
                for _ in cursor._rows:
                    pass
        finally:
            self.isolation_level = saved
        return cursor

    def cursor(self, factory: Callable[[Connection], Cursor] = Cursor) -> Cursor:
        self._check()
        cursor = factory(self)
        if not issubclass(type(cursor), Cursor):  # ``__class__`` cannot fake it
            raise TypeError("factory must return a cursor, not " + type(cursor).__name__)
        return cursor

    def __call__(self, *args: Any, **kwargs: Any) -> Statement:
        """The stdlib's (undocumented) statement factory: checks ``sql`` as ``execute`` would."""
        self._check()  # before the arguments, as the stdlib's
        if kwargs:
            raise TypeError("sqlite3.Connection() takes no keyword arguments")
        if len(args) != 1:
            raise TypeError(f"function takes exactly 1 argument ({len(args)} given)")
        sql = args[0]
        if not isinstance(sql, str):
            raise TypeError(f"argument 1 must be str, not {type(sql).__name__}")
        if len(sql) > self._max_sql_length:
            raise DataError("query string is too large")
        if "\0" in sql:
            raise ProgrammingError("the query contains a null character")
        sql.encode()
        statement: Statement = object.__new__(Statement)
        statement.sql = sql
        return statement

    # As the stdlib's: a plain Cursor, even if a subclass overrides ``cursor()``.  Checked once
    # here instead of by ``cursor()`` and ``Cursor.execute`` again: microseconds a statement.
    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        self._check()
        cursor = Cursor(self)
        self._execute(cursor, sql, parameters, many=False)
        return cursor

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        self._check()
        cursor = Cursor(self)
        self._execute(cursor, sql, seq_of_parameters, many=True)
        return cursor

    @surfaced
    def _execute(self, cursor: Cursor, sql: str, parameters: Any, *, many: bool) -> None:
        """Every statement of the DB-API comes here: checked and classified as the stdlib does,
        then routed to the connection that can run it."""
        sql, kind = statements.checked(sql, self._max_sql_length)
        if kind not in _RECORDED:
            self._txns.script = None  # the transaction can no longer be run again (rerun.py)
        cursor._reset()
        parameters = adaptation.adapt_all(parameters, many)
        self._backend.execute(cursor, sql, parameters, many, kind)


class Statement:
    """What calling a connection returns; only connections make them."""

    __slots__ = ("sql",)
    sql: str

    def __new__(cls, *args: Any, **kwargs: Any) -> Statement:
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")


_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")
# Statements a transaction may run and still be run again (rerun.py); BEGIN, COMMIT and
# ROLLBACK only bound it.
_RECORDED = rerun.KINDS | {"begin", "commit", "rollback"}


def _let_go_dropped_connections() -> None:
    """At the start of ``connect()``: close the connections dropped inside a transaction, and
    let go of what idle ones held (exiting.py), unless this thread holds a lock of ours for a
    live connection (it may be inside our code, in an application callback)."""
    dropped = exiting.take_to_close()
    held = oslock.held_here() - {
        c._db.merge_lock.key for c in dropped if c._txns.exclusive is not None
    }
    if held:
        for conn in dropped:
            exiting.close_later(conn)
        return
    for conn in dropped:
        with contextlib.suppress(Exception):
            conn._close_at_exit()
    exiting.let_go_idle()


def connect(
    database: str | bytes | os.PathLike[str],
    timeout: float = 30.0,
    detect_types: int = 0,
    isolation_level: str | None = "",
    check_same_thread: bool = True,
    factory: Any = None,
    cached_statements: int = 128,
    uri: bool = False,
    *,
    lock_level: str = "row",
    wal_limit: int = DEFAULT_WAL_LIMIT,
    checkpoint_wait: float = DEFAULT_CHECKPOINT_WAIT,
    escalate_at: int = locks.DEFAULT_ESCALATE_AT,
    group_commit: bool | None = None,
    row_lock_delay: float = locks.DEFAULT_ROW_LOCK_DELAY,
    mode: str | None = None,
) -> Connection:
    """Open ``database`` for concurrent writers; the arguments are the stdlib's, plus ours.

    :param timeout: seconds to wait for a lock before raising ``OperationalError``.
    :param detect_types: ``PARSE_DECLTYPES`` and/or ``PARSE_COLNAMES``, as in the stdlib.
    :param isolation_level: as in the stdlib: ``""``/``"DEFERRED"``/``"IMMEDIATE"``/
        ``"EXCLUSIVE"`` open a transaction implicitly before INSERT/UPDATE/DELETE/REPLACE;
        ``None`` runs each statement in its own transaction unless ``BEGIN`` was executed.
    :param factory: a :class:`Connection` subclass to make instead.
    :param uri: ``database`` is a ``file:`` URI.  ``mode=memory`` and ``mode=ro`` (or
        ``immutable=1``) give a private connection, as ``":memory:"`` and ``""`` do; with
        ``cache=shared`` a memory database is shared by this process's connections that name
        it, as in the stdlib (shared_memory.py).
    :param lock_level: ``"row"`` (default): writers conflict only on rows they both wrote
        (snapshot isolation); ``"page"`` and ``"table"`` are serializable.
    :param wal_limit: WAL size in bytes past which new transactions are held back (for at
        most ``checkpoint_wait`` seconds) while the WAL is checkpointed and reset.
    :param escalate_at: row locks of one table in one transaction past which the whole
        table is locked instead.
    :param group_commit: the process that merges applies every transaction waiting to commit
        in one SQLite transaction, sharing its fsync.  ``None`` (default): when commits fsync
        (``synchronous`` FULL or EXTRA); at NORMAL a WAL commit costs less than the grouping.
    :param row_lock_delay: seconds after a statement at which its row locks are written to the
        lock database, where other writers of those rows see them and wait, unless the
        transaction has committed or rolled back by then (the merge checks every row either
        way).  ``0`` writes them at once, at a cost on every statement.
    :param mode: how write transactions run.  ``"auto"`` (default) chooses per transaction:
        short ones run directly (one at a time, as in stock SQLite, never conflicting), long
        ones optimistically (in parallel, validated at commit), and a long one that reaches a
        table where transactions recently conflicted goes on directly from there.
        ``"optimistic"`` and ``"direct"`` force one way.  ``None``: the environment
        variable ``SQLITE_CONCURRENT_MODE`` if set (for applications that cannot pass it),
        else ``"auto"``.
    :raises OperationalError: the file cannot be opened or switched to WAL mode.
    """
    cls = factory if factory is not None else Connection
    # By keyword, as the stdlib relays them: a factory may change any of them.
    return cls(
        database,
        timeout=timeout,
        detect_types=detect_types,
        isolation_level=isolation_level,
        check_same_thread=check_same_thread,
        factory=factory,
        cached_statements=cached_statements,
        uri=uri,
        lock_level=lock_level,
        wal_limit=wal_limit,
        checkpoint_wait=checkpoint_wait,
        escalate_at=escalate_at,
        group_commit=group_commit,
        row_lock_delay=row_lock_delay,
        mode=mode,
    )


__all__ = ["Connection", "Cursor", "Error", "connect"]
