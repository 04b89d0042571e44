"""The lock database ``<db>-locks``: who holds what.

A plain SQLite database, queryable from any sqlite3 shell.  It only has to survive process
crashes (after a machine crash every holder is dead), hence WAL with ``synchronous=OFF``.
Every write runs under a kernel-blocking byte lock, so writers queue in the kernel rather than
in SQLite's sleeping busy handler (architecture.md, "Locks and waiting").

Schema (version 1).  ``locks`` and ``waiters`` are already here so the lock levels can use them:

- ``holders(pid, start_time, ...)``: processes with open connections; ``start_time`` tells a live
  process from a dead one whose pid was reused.
- ``transactions(txn_id, pid, lock_level, state, ...)``: live write transactions; ``txn_id`` is
  also the commit marker's key in the main database, so it never repeats.
- ``locks(resource, txn_id, mode)``: resources are ``db``, ``table:<name>``, ``page:<n>`` and
  ``row:<table>:<key>``; modes ``S`` and ``X``.
- ``waiters(seq, txn_id, resource, mode)``: ``seq`` orders waiters first come, first served.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import apsw

from .. import filenames
from ..storage import sidecar, snapshot
from . import lockdb_health, oslock, reaping
from .commit_queue import CommitQueue
from .grants import (
    ACTIVE,
    COMMITTING,
    DIRECT,
    Grants,
    others_waiting,
)
from .processes import process_start_time
from .reaping import Reaped

SCHEMA_VERSION = 3

# A link planted at -locks is refused (sidecar.py) rather than written through.
_OPEN_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_NOFOLLOW

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holders(
    pid INTEGER PRIMARY KEY,
    start_time INTEGER NOT NULL,
    registered_at REAL NOT NULL,
    argv TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions(
    txn_id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    lock_level TEXT NOT NULL,
    state TEXT NOT NULL,
    began_at REAL NOT NULL,
    snapshot_frame INTEGER
);
-- No index on state or pid: the table holds only live transactions, and every index is one
-- more page written by every begin and end (measured: 12 us of a 68 us begin, lock and end).
DROP INDEX IF EXISTS transactions_state;
DROP INDEX IF EXISTS transactions_pid;
CREATE TABLE IF NOT EXISTS locks(
    resource TEXT NOT NULL,
    txn_id INTEGER NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('S', 'X')),
    granted_at REAL NOT NULL,
    PRIMARY KEY (resource, txn_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locks_txn ON locks(txn_id);
CREATE TABLE IF NOT EXISTS waiters(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id INTEGER NOT NULL,
    resource TEXT NOT NULL,
    mode TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS waiters_resource ON waiters(resource, seq);
CREATE INDEX IF NOT EXISTS waiters_txn ON waiters(txn_id);
CREATE TABLE IF NOT EXISTS table_versions(
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
"""

_V3_COLUMNS = (
    ("journal", "TEXT"),
    ("journal_offset", "INTEGER"),
    ("journal_length", "INTEGER"),
    ("outcome", "BLOB"),
)

_BUMP_VERSION = (
    "INSERT INTO table_versions(name, version) VALUES (?, 1) "
    "ON CONFLICT(name) DO UPDATE SET version = version + 1"
)


def _argv_text() -> str:
    # For people reading the lock database; arguments that are not UTF-8 (a path, say) are
    # shown with replacement characters rather than refused.
    text = " ".join(sys.argv)[:500]
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _forked() -> None:
    # The parent's connections are not the child's (they hold no lock here and are never closed
    # through LockDB.close), and a thread may have held the lock at fork().
    LockDB._open_lock = threading.Lock()
    LockDB._open_here.clear()


class LockDB:
    """One connection to the lock database.  Not shared between threads."""

    # Open ones in this process, per lock database: the process's own descriptors on the file
    # may close only while none is (closing drops their POSIX locks, architecture.md, "Snapshots,
    # and the locks a close drops"; holding.py).
    _open_here: ClassVar[collections.Counter[str]] = collections.Counter()
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, db_path: str, *, first_txn_id: int = 1) -> None:
        """:raises OperationalError: the lock database is damaged, not ours, or unusable."""
        self.path = db_path + "-locks"
        try:
            self._open(db_path, first_txn_id)
        except BaseException as e:
            self._abandon()
            if isinstance(e, (apsw.Error, OSError)):
                raise lockdb_health.failed(self.path, e) from e
            raise

    def _abandon(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            with contextlib.suppress(apsw.Error):
                conn.close()
        self._uncount()

    def _open(self, db_path: str, first_txn_id: int) -> None:
        self._counted = False
        with LockDB._open_lock:
            LockDB._open_here[self.path] += 1
        self._counted = True
        try:
            # Our lock descriptor creates the file as SQLite creates a -wal (sidecar.py);
            # SQLite gives -locks-wal and -locks-shm the mode and owner of -locks in turn.
            oslock.present(self.path)
            sidecar.ensure_sqlite_files(self.path)
            created = os.stat(self.path).st_size == 0
            self.conn = apsw.Connection(*filenames.for_sqlite(self.path, _OPEN_FLAGS))
        except BaseException:
            self._uncount()
            raise
        self.conn.set_busy_timeout(60_000)  # safety net only: writers serialize on _guard
        self._guard = oslock.ByteLock(self.path, oslock.LOCKDB)
        self.grants = Grants(self)
        self.queue = CommitQueue(self)
        with self._guard:
            _prepare(self.conn, created)
            with self._write():
                _create_schema(self.conn, self.path, first_txn_id)
        self.pid = os.getpid()
        self.start_time = process_start_time(self.pid) or 0
        # The lock database's WAL index, read directly to tell whether anything changed (see
        # ``quiet``).  Refreshed now that our connection is open: -shm cannot be deleted and
        # recreated under an open connection, but may have been before it opened.
        self._index = snapshot.WalFiles.for_path(self.path)
        self._index.refresh()
        self._quiet_at: bytes | None = None  # both header copies, as last seen quiet
        # Ended, but the lock database could not be written then: txn_id -> changed tables.
        self._unended: dict[int, frozenset[str]] = {}
        self._ids: Iterator[int] = iter(())

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction; the caller must hold ``_guard``."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self._commit()
        except apsw.Error as e:
            self._mark(e)
            raise

    def _commit(self) -> None:
        """COMMIT; one that fails (a full disk) rolls back, so that the connection never keeps
        the lock database's write lock."""
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            if not self.conn.get_autocommit():
                with contextlib.suppress(apsw.Error):
                    self.conn.execute("ROLLBACK")
            raise

    def _mark(self, e: apsw.Error) -> None:
        """Mark ``e`` as the lock database's: leaving the library, its message names the file
        (:func:`.errors.translate`)."""
        e.lock_database = self.path  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def writing(self) -> Iterator[apsw.Connection]:
        with self._guard, self._write():
            yield self.conn

    def _write_one(self, sql: str, params: tuple[object, ...]) -> int:
        """Run one statement in its own write transaction; returns ``last_insert_rowid``.

        The per-transaction hot path, so no context-manager machinery.
        """
        conn = self.conn
        self._guard.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(sql, params)
                rowid = conn.last_insert_rowid()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._commit()
            return rowid
        except apsw.Error as e:
            self._mark(e)
            raise
        finally:
            self._guard.release()

    def register_holder(self) -> list[Reaped]:
        """Record this process as a holder, reaping dead ones first.  Returns what was reaped."""
        with self.writing() as c:
            reaped = reaping.reap_dead(c, self.pid, self.start_time)
            c.execute(
                "INSERT INTO holders(pid, start_time, registered_at, argv) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(pid) DO UPDATE SET start_time=excluded.start_time "
                "WHERE start_time != excluded.start_time",
                (self.pid, self.start_time, time.time(), _argv_text()),
            )
        return reaping.dispose_journals(self.path, reaped)

    def reap(self) -> list[Reaped]:
        """Forget dead holders and what they held; their journals go too."""
        with self.writing() as c:
            reaped = reaping.reap_dead(c, self.pid, self.start_time)
        return reaping.dispose_journals(self.path, reaped)

    def reap_and_wake(self) -> list[int]:
        """Reap dead holders; returns the waiters to wake if anything was released."""
        with self.writing() as c:
            reaped = reaping.reap_dead(c, self.pid, self.start_time)
            wake = others_waiting(c, -1) if reaped else []
        reaping.dispose_journals(self.path, reaped)
        return wake

    def begin(self, lock_level: str) -> tuple[int, bool]:
        """Register a new transaction of this process.

        :returns: its id, and whether an exclusive operation holds or waits for the ``db``
            lock, in which case the transaction must wait for ``db`` in S mode before it runs.
        """
        conn = self.conn
        self._guard.acquire()
        try:
            # One statement: the new id, and whether an exclusive operation goes first.
            ((txn_id, gated),) = conn.execute(
                "INSERT INTO transactions(pid, lock_level, state, began_at) VALUES (?, ?, ?, ?) "
                "RETURNING txn_id, EXISTS (SELECT 1 FROM waiters WHERE resource = 'db' "
                "AND mode = 'X' UNION ALL SELECT 1 FROM locks WHERE resource = 'db' "
                "AND mode = 'X')",
                (self.pid, lock_level, ACTIVE, time.time()),
            ).fetchall()
        except apsw.Error as e:
            self._mark(e)
            raise
        finally:
            self._guard.release()
        return txn_id, bool(gated)

    def next_id(self) -> int:
        """An id for a transaction that registers later, if at all (see :mod:`.publisher`):
        reserved 64 at a time, so a begin writes nothing."""
        txn_id = next(self._ids, None)
        if txn_id is None:
            self._ids = iter(self.reserve_ids(64))
            txn_id = next(self._ids)
        return txn_id

    def exclusive_queued(self) -> bool:
        """Whether an exclusive operation holds or waits for the ``db`` lock (architecture.md,
        "Exclusive operations")."""
        if self.quiet():
            return False
        return (
            self.conn.execute(
                "SELECT 1 FROM waiters WHERE resource = 'db' AND mode = 'X' "
                "UNION ALL SELECT 1 FROM locks WHERE resource = 'db' AND mode = 'X' LIMIT 1"
            ).fetchone()
            is not None
        )

    def end(self, txn_id: int, changed_tables: frozenset[str] = frozenset()) -> list[int]:
        """Forget a finished transaction, release everything it held, and bump the version of
        each table it changed (table-level transactions use them to detect stale snapshots).

        Returns the waiting transactions to wake.  If the lock database cannot be written (a
        full disk), the error propagates and the transaction stays to be ended with the next
        ``end`` or ``begin`` of this connection (:meth:`end_unended`).
        """
        unended = self._unended
        if unended:
            unended[txn_id] = changed_tables | unended.get(txn_id, frozenset())
        conn = self.conn
        self._guard.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                wake = []
                for each, changed in list(unended.items()) or [(txn_id, changed_tables)]:
                    reaping.drop_txn(conn, each)
                    # Only a live table-level transaction can hold a snapshot older than this
                    # commit (one that registers later pins after it): else nothing to bump,
                    # and the lock database's commit writes one page less.
                    if changed and self._table_level_live(conn):
                        for name in changed:
                            conn.execute(_BUMP_VERSION, (name,))
                    # Even with no lock rows it held ``db`` in S mode, implicitly: an
                    # exclusive operation may be waiting for it.
                    wake += others_waiting(conn, each)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._commit()
        except apsw.Error as e:
            self._mark(e)
            unended.setdefault(txn_id, changed_tables)
            raise
        finally:
            self._guard.release()
        unended.clear()
        return wake

    def end_unended(self) -> list[int]:
        """End the transactions an earlier :meth:`end` could not; returns those to wake."""
        if not self._unended:
            return []
        return self.end(*next(iter(self._unended.items())))

    def reserve_ids(self, count: int) -> range:
        """Transaction ids for statements that commit inside the merge lock (the autocommit
        fast path): they need a commit marker but never appear as live transactions."""
        with self.writing() as c:
            (last,) = c.execute(
                "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'transactions' "
                "RETURNING seq",
                (count,),
            ).fetchone()
        return range(last - count + 1, last + 1)

    def quiet(self) -> bool:
        """Whether no transaction is live and no lock is held or awaited.

        The autocommit fast path asks three times per statement, and while only such
        statements run the answer stays yes.  Any commit to the lock database changes its
        WAL-index header, so an unchanged header since the last yes is still yes: one
        ``pread`` instead of a query (the header is read before the query, so a change racing
        the query shows as a different header next time).
        """
        # Both copies of the header, equal (not mid-update) and equal to the one last seen
        # quiet, whose checksum was verified then.
        both = os.pread(self._index.shm, 96, 0)
        if both == self._quiet_at:
            return True
        header = snapshot.read_wal_header(self._index.shm)
        (quiet,) = self.conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM transactions) "
            "AND NOT EXISTS (SELECT 1 FROM locks) AND NOT EXISTS (SELECT 1 FROM waiters)"
        ).fetchone()
        self._quiet_at = header.raw * 2 if quiet and header is not None else None
        return bool(quiet)

    def locked_by_others(self, tables: set[str], rows: dict[str, list[int]]) -> bool:
        """Whether a live transaction holds a lock on one of ``tables`` or on one of the
        (updated or deleted) ``rows``.  One query unless a table has many rows."""
        if self.quiet():
            return False
        resources = ["table:" + t for t in tables]
        for table, rowids in rows.items():
            if len(rowids) > 500:
                prefix = f"row:{table}:"
                if self.conn.execute(
                    "SELECT 1 FROM locks WHERE resource >= ? AND resource < ? LIMIT 1",
                    (prefix, prefix[:-1] + ";"),
                ).fetchone():
                    return True
            else:
                resources.extend(f"row:{table}:{r}" for r in rowids)
        if not resources:
            return False
        return (
            self.conn.execute(
                f"SELECT 1 FROM locks WHERE resource IN ({','.join('?' * len(resources))}) LIMIT 1",
                resources,
            ).fetchone()
            is not None
        )

    def has_table_level(self) -> bool:
        """Whether any table-level transaction is live."""
        return self._table_level_live(self.conn)

    @staticmethod
    def _table_level_live(conn: apsw.Connection) -> bool:
        return (
            conn.execute("SELECT 1 FROM transactions WHERE lock_level = 'table' LIMIT 1").fetchone()
            is not None
        )

    def fast_path_closed(self, besides: int = 0) -> bool:
        """Whether a statement must not bypass the transaction machinery: a table-level
        transaction is live (the update hook cannot report all it locks), or an exclusive
        operation holds or waits for the ``db`` lock (it goes first).  ``besides``: the
        transaction asking, whose own registration and locks do not count."""
        if self.quiet():
            return False
        return (
            self.conn.execute(
                "SELECT 1 FROM transactions WHERE lock_level = 'table' AND txn_id != ?1 "
                "UNION ALL SELECT 1 FROM waiters WHERE resource = 'db' AND txn_id != ?1 "
                "UNION ALL SELECT 1 FROM locks WHERE resource = 'db' AND txn_id != ?1 LIMIT 1",
                (besides,),
            ).fetchone()
            is not None
        )

    def bump_versions_if_table_level(self, tables: set[str]) -> None:
        """Table-level transactions compare table versions to spot stale snapshots."""
        if not tables or self.quiet() or not self.has_table_level():
            return
        with self.writing() as c:
            for name in tables:
                c.execute(_BUMP_VERSION, (name,))

    def bump_all_versions_if_table_level(self, conn: apsw.Connection) -> None:
        """After a direct transaction: a table-level transaction that registered while it ran
        may hold an older snapshot.  Which tables it wrote is not known (the update hook misses
        WITHOUT ROWID ones), so every table's version moves: in this rare case, a spurious
        conflict rather than a missed one."""
        if self.quiet() or not self.has_table_level():
            return
        tables = conn.execute("SELECT name FROM main.sqlite_schema WHERE type = 'table'")
        self.bump_versions_if_table_level({name for (name,) in tables})

    def show_direct(self, txn_id: int, lock_level: str, began_at: float) -> None:
        """Show a long direct transaction (it holds the merge lock and nothing here)."""
        with self.writing() as c:
            c.execute(
                "INSERT OR IGNORE INTO transactions(txn_id, pid, lock_level, state, began_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (txn_id, self.pid, lock_level, DIRECT, began_at),
            )

    def record_pages(self, txn_id: int, pages: frozenset[int]) -> None:
        """Show a committing page-level transaction's read set (as S locks on ``page:<n>``)."""
        now = time.time()
        with self.writing() as c:
            c.execute("UPDATE transactions SET state=? WHERE txn_id=?", (COMMITTING, txn_id))
            c.executemany(
                "INSERT OR IGNORE INTO locks(resource, txn_id, mode, granted_at) "
                "VALUES (?, ?, 'S', ?)",
                [(f"page:{p}", txn_id, now) for p in sorted(pages)],
            )

    def table_versions(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT name, version FROM table_versions"))

    def forget_own_transactions(self) -> None:
        """Forget every transaction of this process and what it held, as reaping a dead
        process does: only when none of its connections is open any more."""
        with self.writing() as c:
            mine = [
                t for (t,) in c.execute("SELECT txn_id FROM transactions WHERE pid=?", (self.pid,))
            ]
            for txn_id in mine:
                reaping.drop_txn(c, txn_id)

    def unregister_holder(self) -> None:
        """Drop this process's holder row if it has no transactions left."""
        self.end_unended()
        with self.writing() as c:
            c.execute(
                "DELETE FROM holders WHERE pid=? AND start_time=? AND NOT EXISTS "
                "(SELECT 1 FROM transactions WHERE pid=?)",
                (self.pid, self.start_time, self.pid),
            )

    def close(self) -> None:
        self.conn.close()
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            with LockDB._open_lock:
                LockDB._open_here[self.path] -= 1
                if LockDB._open_here[self.path] <= 0:
                    del LockDB._open_here[self.path]

    @staticmethod
    def open_in_process(db_path: str) -> bool:
        """Whether a lock-database connection of this process to ``db_path``'s is open."""
        return LockDB._open_here[db_path + "-locks"] > 0


os.register_at_fork(after_in_child=_forked)


def _prepare(conn: apsw.Connection, created: bool) -> None:
    if created:
        # Small pages: a lock database write touches a few short rows in each of a few
        # pages, and every page it changes is copied to the WAL (measured: 1 KiB pages
        # save 4-8 us of a 68 us begin, lock and end).
        conn.execute("PRAGMA page_size=1024")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")


def _create_schema(conn: apsw.Connection, path: str, first_txn_id: int) -> None:
    """In a write transaction: our tables, made or brought up to date.

    :raises OperationalError: the file holds another application's tables.
    """
    foreign = lockdb_health.foreign_tables(conn)
    if foreign is not None:
        raise lockdb_health.damaged(path, foreign)
    conn.execute(_SCHEMA)
    # Tells our lock databases from other SQLite files at a glance (lockdb_health).
    app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
    if app_id != lockdb_health.APPLICATION_ID:
        conn.execute(f"PRAGMA application_id={lockdb_health.APPLICATION_ID}")
    # Version 3: where each transaction waiting to commit left its merge record
    # (group commit), and the outcome a merger recorded for it.
    have = {r[1] for r in conn.execute("PRAGMA table_info(transactions)")}
    for column, kind in _V3_COLUMNS:
        if column not in have:
            conn.execute(f"ALTER TABLE transactions ADD COLUMN {column} {kind}")
    conn.execute(
        "INSERT INTO meta VALUES ('schema_version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        (SCHEMA_VERSION,),
    )
    # Transaction ids key the commit markers in the main database, so a lock
    # database that was deleted must not hand out ids that were already used.
    conn.execute(
        "INSERT INTO sqlite_sequence(name, seq) SELECT 'transactions', ? "
        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name='transactions')",
        (first_txn_id - 1,),
    )
    conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name='transactions'",
        (first_txn_id - 1,),
    )
