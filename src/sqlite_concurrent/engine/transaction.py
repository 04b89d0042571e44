"""The life of one write transaction (architecture.md, "A commit, straight down").

Begin: register in the lock database (a row-level transaction registers later, with its first
written lock: see :mod:`.publisher`), start the transaction connection and a session.  The
snapshot is pinned just before the first statement (as late as possible: fewer conflicts, shorter
WAL pins).  Commit: take the changeset, roll the transaction connection back (its dirty pages are
never needed), then merge the changeset into the real database.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Protocol

import apsw

from .. import crashpoints
from ..commit import drain, merge
from ..locking import waits
from ..locking.levels import Level
from ..locking.lockdb import LockDB
from ..locking.locks import Locking, Settings
from ..locking.oslock import ByteLock, HeldByThisThreadError
from ..storage.journal import Journal
from ..storage.overlay import Overlay, Slot
from ..storage.snapshot import Snapshot, WalFiles
from . import foreign_keys, rowid_keys, savepoints
from .authorizer import Denied
from .rebase import Rebase, TableInfo


class Connections(Protocol):
    """Who opens a transaction's own connection (the DB-API layer: it carries the
    application's functions, pragmas and attached files) and knows its tables."""

    def connection_for(self, txn: WriteTransaction) -> apsw.Connection:
        """The connection ``txn`` runs on, opened (on its snapshot) or reused."""

    def pinned(self, txn: WriteTransaction) -> None:
        """``txn``'s snapshot is pinned; nothing of it has run yet.  May replace its
        connection (:meth:`WriteTransaction.replace_connection`)."""

    def table_info(self, txn: WriteTransaction, table: str) -> TableInfo | None:
        """``table`` as of ``txn``'s snapshot."""


class WriteTransaction:
    def __init__(
        self,
        *,
        path: str,
        lockdb: LockDB,
        locking: Settings,
        snapshot_conn: apsw.Connection,
        wal_files: WalFiles,
        slot: Slot,
        connections: Connections,
        snapshot_gate: ByteLock,
        merge_lock: ByteLock,
        begin: bool = True,
        immediate: bool = False,
        journal: Journal | None = None,
        denied: Denied,
        defer_foreign_keys: bool = False,
    ) -> None:
        """``connections`` opens (or reuses) the transaction's own connection, hears when its
        snapshot is pinned, and describes its tables; ``journal`` takes spilled pages and the
        commit record."""
        self._journal = journal
        # PRAGMA defer_foreign_keys, for whichever connection the transaction runs on.
        self.defer_foreign_keys = defer_foreign_keys
        self._denied = denied  # muted while the session prepares its own statements
        self.path = path
        self.lockdb = lockdb
        self.level: Level = locking["level"]
        gated = self._register(locking, immediate)
        self._snapshot_conn = snapshot_conn
        self._wal_files = wal_files
        self._connections = connections
        self._slot = slot
        self._snapshot_gate = snapshot_gate
        self._merge_lock = merge_lock
        self._begin_sql = begin
        self.snapshot: Snapshot | None = None
        self._schema_version: int | None = None
        self.session: apsw.Session | None = None
        self.conn: apsw.Connection | None = None
        self.fresh = True  # no statement has run yet
        self.rebase = Rebase()
        self.inserted = False  # any row inserted (AUTOINCREMENT counters may have moved)
        # Any DML run: an INSERT that inserts nothing still creates its table's counter.
        self.ran_dml = False
        self.wrote = False  # a row of a rowid table written (what the update hook reports)
        self.changed_tables: frozenset[str] = frozenset()
        # Rowids written in tables the session records by another key (``rowid_keys``).
        self._keyed: dict[str, rowid_keys.KeyedTable] = {}
        self._keyed_rowids: dict[str, set[int]] = {}
        self.savepoints = savepoints.Stack(begun_by_savepoint=not begin)
        self.saved: savepoints.Saved | None = None  # its savepoints, as it moved (``prepare``)
        try:
            if gated:  # an exclusive operation goes first (architecture.md, "Exclusive operations")
                waits.acquire(lockdb, self.txn_id, [("db", "S")], locking["timeout"])
            self.conn = connections.connection_for(self)
            self._start_connection()
            if self.snapshot is not None:  # pinned to open the connection
                self._know_keyed()
        except BaseException:
            self._finish()
            raise

    def _register(self, locking: Settings, immediate: bool) -> bool:
        """Take a transaction id, registered in the lock database unless it waits for nothing
        yet; returns whether an exclusive operation goes first (it must wait at its start)."""
        lockdb = self.lockdb
        began_at = time.time()
        # A row-level transaction waits for nothing until it writes, so it registers then;
        # unless an exclusive operation is queued, which it must queue behind (architecture.md,
        # "Exclusive operations").
        registered = self.level.registers_at_begin or lockdb.exclusive_queued()
        if registered:
            self.txn_id, gated = lockdb.begin(self.level.name)
        else:
            self.txn_id, gated = lockdb.next_id(), False
        crashpoints.reach("begin.registered")
        waits.owned_by_this_thread(self.txn_id)
        self.locking = Locking(
            lockdb=lockdb,
            txn_id=self.txn_id,
            immediate=immediate,
            registered=registered,
            began_at=began_at,
            **locking,
        )
        return gated

    def _start_connection(self) -> None:
        if self._begin_sql:  # else the caller's SAVEPOINT statement opens it, as in SQLite
            self.conn.execute("BEGIN")
        self.session = apsw.Session(self.conn, "main")
        # Tables without a declared PRIMARY KEY are then recorded by rowid (architecture.md,
        # "Changesets").
        self.session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
        self.session.attach()
        if self.defer_foreign_keys:
            assert self.conn is not None
            with self._denied.muting():
                foreign_keys.set_flag(self.conn, True)

    @property
    def connection(self) -> apsw.Connection:
        """The transaction connection (open from the start of the transaction on)."""
        assert self.conn is not None
        return self.conn

    def ensure_pinned(self) -> None:
        if self.snapshot is not None:
            return
        if self.level.locks_tables:
            self._after_writers_on_the_merger()
            self.locking.read_versions()
        # The checkpointer's gate, held open (shared) while pinning: closed, new snapshots
        # wait for its restart.
        self._snapshot_gate.acquire(shared=True)
        try:
            self.snapshot = Snapshot(self._wal_files, self._snapshot_conn)
        finally:
            self._snapshot_gate.release()
        self._schema_version = None
        self._slot.overlay = Overlay(self.snapshot, (self._journal, self.txn_id))
        # Once the snapshot (and with it the schema) is known, before anything of the
        # transaction runs on its connection: it may replace the connection.
        self._connections.pinned(self)
        if self.conn is not None:
            self._know_keyed()
        crashpoints.reach("begin.pinned")

    def _after_writers_on_the_merger(self) -> None:
        """Wait until no transaction that began before this one registered still writes on
        the merger without table locks (a direct one, say): they cannot report what they
        write, so the snapshot must include them.  Once this one is registered, they check
        under the merge lock and no longer start (``OnMerger.closed_to_direct``)."""
        if not self._merge_lock.held():
            return  # nobody writes on the merger now, and whoever starts to sees this one
        try:
            # Shared: table-level transactions beginning together do not wait for each other.
            self._merge_lock.acquire(shared=True)
        except HeldByThisThreadError:
            # This thread's other connection is the writer: it cannot end while this waits.
            return
        self._merge_lock.release()

    def _know_keyed(self) -> None:
        # Before any statement: the update hook may not run SQL on its connection.
        assert self.conn is not None
        self._keyed = rowid_keys.tables(self.conn, self.schema_version)

    def replace_connection(self, conn: apsw.Connection) -> None:
        """Go on on ``conn`` instead (same snapshot, same slot).  Only from
        ``Connections.pinned``: the snapshot is new, so nothing of the transaction has run on
        the old connection."""
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.conn is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.conn = conn
        self._start_connection()

    def restart(self) -> None:
        """Start over on a new snapshot, keeping the locks; only while nothing has run."""
        assert self.fresh
        self._release_private()
        self._start_connection()
        self.ensure_pinned()

    def on_row_write(self, op: int, db: str, table: str, rowid: int) -> None:
        """The transaction connection's update hook."""
        if db != "main":
            return
        self.wrote = True
        if table in self._keyed:
            self._keyed_rowids.setdefault(table, set()).add(rowid)
        if op == apsw.SQLITE_INSERT:
            self.inserted = True
            if self.rebase.inserted(table, rowid):
                return  # its rowid is provisional (rebased at merge): nothing to lock
        if self.level.locks_rows:
            self.locking.row_written(table, rowid)

    @property
    def schema_version(self) -> int:
        """The snapshot's schema cookie (header offset 40).  Fixed for the transaction's life:
        schema changes cannot run inside one."""
        if self._schema_version is None:
            overlay = self._slot.overlay
            assert overlay is not None
            self._schema_version = int.from_bytes(overlay.page1()[40:44], "big")
        return self._schema_version

    def prepare(self, shapes: dict[Any, Any], *, moving: bool = False) -> merge.Pending | None:
        """Turn the transaction into a changeset and let go of its private state.

        ``moving``: it goes on on the merger (architecture.md, "Exclusive operations"), so its open
        savepoints are captured too (``saved``), and then its rowids are kept as they are (they name
        rows in those).

        Returns ``None`` when it wrote nothing.
        """
        assert self.session is not None
        self.locking.close()  # what was not published by now never will be: the merge decides
        # The session's own statements (a savepoint, a SELECT per table, table_xinfo) need no
        # vetting, and the stdlib's authorizer would never see them.  Muted, not removed:
        # setting an authorizer again expires every statement prepared on the connection.
        self._denied.muted = True
        try:
            changeset = self.session.changeset()
            keep = moving and bool(self.savepoints.names)
            pending = self._pending(changeset, shapes, rebase=not keep)
            if keep:
                keyed = {name: self._keyed[name] for name in self._keyed_rowids}
                self.saved = savepoints.capture(
                    self.connection, self.session, self.savepoints.names, keyed, self._keyed_rowids
                )
        finally:
            self._denied.muted = False
        self.session.close()
        self.session = None
        # Page-level validation compares against frames after the snapshot, so the snapshot
        # (and with it the WAL) stays pinned until the merge is done; moving, what it read is
        # checked too (``read_check``), and the mover lets go of it (``release_snapshot``).
        self._release_private(
            keep_snapshot=moving or (pending is not None and self.level.validates_pages)
        )
        return pending

    def _pending(
        self, changeset: bytes, shapes: dict[Any, Any], *, rebase: bool
    ) -> merge.Pending | None:
        pending = None
        by_rowid: frozenset[str] = frozenset()
        if self._keyed_rowids and self.snapshot is not None:
            changeset, self._keyed_rowids = rowid_keys.rekey(
                changeset,
                self._keyed_rowids,
                self._keyed,
                txn_conn=self.connection,
                snapshot_conn=self._snapshot_conn,
            )
            by_rowid = frozenset(self._keyed_rowids)
        if self.snapshot is not None:
            images, rows, self.changed_tables, inserts = (
                merge.read_changeset(self._snapshot_conn, changeset, shapes)
                if changeset
                else (None, None, frozenset(), frozenset())
            )
            # Only an INSERT advances or creates an AUTOINCREMENT counter; but a changed key
            # is applied as a DELETE and an INSERT, and must not advance it.
            sequences = (
                merge.sequences(self.connection, self._snapshot_conn, inserts)
                if self.inserted or inserts or self.ran_dml
                else []
            )
            if changeset or sequences:
                fk = merge.foreign_keys(self.conn)
                pending = merge.Pending(
                    txn_id=self.txn_id,
                    changeset=changeset,
                    schema_version=self.schema_version,
                    images=images,
                    foreign_keys=bool(fk),
                    sequences=sequences,
                    pages=self._page_check(),
                    rows=rows,
                    by_rowid=by_rowid,
                    schema_digest=merge.schema_digest(self.connection, self.schema_version),
                )
                if rebase and self.rebase.pending:
                    pending.rebase = self.rebase.result(
                        set(self.changed_tables), lambda t: self._connections.table_info(self, t)
                    )
        return pending

    def _page_check(self) -> merge.PageCheck | None:
        if not self.level.validates_pages:
            return None
        overlay = self._slot.overlay
        assert overlay is not None and self.snapshot is not None
        # Page 1 changes whenever the file grows; schema changes are caught by the cookie.
        pages = frozenset(overlay.read_set - {1})
        self.lockdb.record_pages(self.txn_id, pages)
        return merge.PageCheck(self.path, pages, self.snapshot.header)

    def _release_private(self, *, keep_snapshot: bool = False) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        overlay = self._slot.overlay
        if self.conn is not None and self.conn.in_transaction:
            if overlay is not None:
                overlay.discarding = True
            self.conn.execute("ROLLBACK")
        if overlay is not None:
            overlay.release()
        self._slot.overlay = None
        self.locking.forget_statement()
        if not keep_snapshot:
            self.release_snapshot()

    def release_snapshot(self) -> None:
        """Let the snapshot's frames be checkpointed: nothing will be checked against it."""
        if self.snapshot is not None:
            self.snapshot.release()
            self.snapshot = None
            drain.released(self.lockdb.path)

    def reads_current(self) -> bool:
        """Under the merge lock: whether no page the transaction read has changed since its
        snapshot, so that going on from the latest database reads what it would have read.
        A writer that is not ours may still commit before the caller's write transaction
        begins: :meth:`read_check` is for asking again inside it."""
        check = self.read_check()
        return check is None or not merge.stale_pages(check)

    def read_check(self) -> merge.PageCheck | None:
        """The pages read so far, with the snapshot they were read in; ``None`` if none."""
        overlay = self._slot.overlay
        if self.snapshot is None or overlay is None:
            return None
        pages = frozenset(overlay.read_set - {1})  # page 1: schema changes show in the cookie
        return merge.PageCheck(self.path, pages, self.snapshot.header) if pages else None

    def ensure_registered(self) -> None:
        """In the lock database, before it waits for anything or is offered to other mergers."""
        self.locking.acquire_pending()

    def _finish(self) -> None:
        try:
            with contextlib.suppress(apsw.Error):
                self._release_private()
        finally:
            waits.forget(self.txn_id)
            registered = self.locking.close()
            if self.changed_tables:
                crashpoints.reach("ack.before_release")
            if registered:
                waits.wake(self.lockdb, self.lockdb.end(self.txn_id, self.changed_tables))
            else:
                # Nothing to release, nobody waiting for it; a live table-level transaction
                # still needs to know what changed.
                self.lockdb.bump_versions_if_table_level(set(self.changed_tables))
            if self.changed_tables:
                crashpoints.reach("ack.after_release")

    def rollback(self) -> None:
        self.changed_tables = frozenset()
        self._finish()

    def end(self, committed: bool) -> None:
        """Unregister after a commit (or a failed merge)."""
        if not committed:
            self.changed_tables = frozenset()
        self._finish()
