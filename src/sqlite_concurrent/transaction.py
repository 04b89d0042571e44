"""The life of one write transaction (DESIGN section 3).

Begin: register in the lock database, pin a snapshot, point the transaction connection's overlay
at it and start a session.  Commit: take the changeset, roll the transaction connection back (its
dirty pages are never needed), then merge the changeset into the real database.
"""

from __future__ import annotations

import contextlib
from typing import Any

import apsw

from . import merge
from .lockdb import LockDB
from .overlay import Overlay, Slot
from .snapshot import Snapshot


class WriteTransaction:
    def __init__(
        self,
        *,
        path: str,
        lockdb: LockDB,
        lock_level: str,
        snapshot_conn: apsw.Connection,
        slot: Slot,
        open_txn_conn: Any,
        pinning: Any,
        begin: bool = True,
    ) -> None:
        self.lockdb = lockdb
        self.txn_id = lockdb.begin(lock_level)
        self._snapshot_conn = snapshot_conn
        self._slot = slot
        self.snapshot: Snapshot | None = None
        self.session: apsw.Session | None = None
        try:
            with pinning():
                self.snapshot = Snapshot(path, snapshot_conn)
            slot.overlay = Overlay(self.snapshot)
            self.conn: apsw.Connection = open_txn_conn()
            if begin:  # else the caller's SAVEPOINT statement is what opens it, as in SQLite
                self.conn.execute("BEGIN")
            self.session = apsw.Session(self.conn, "main")
            # Tables without a declared PRIMARY KEY are then recorded by rowid (DESIGN 8).
            self.session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
            self.session.attach()
        except BaseException:
            self._finish(rollback_conn=True)
            raise

    @property
    def schema_version(self) -> int:
        assert self._slot.overlay is not None
        return int.from_bytes(self._slot.overlay.page(1)[40:44], "big")

    def prepare(self, shapes: dict[Any, Any]) -> merge.Pending | None:
        """Turn the transaction into a changeset and let go of its private state.

        Returns ``None`` when it wrote nothing.
        """
        assert self.session is not None and self.snapshot is not None
        changeset = self.session.changeset()
        self.session.close()
        self.session = None
        pending = None
        sequences = merge.sequence_advances(self.conn, self._snapshot_conn)
        if changeset or sequences:
            (fk,) = self.conn.execute("PRAGMA foreign_keys").fetchone()
            pending = merge.Pending(
                txn_id=self.txn_id,
                changeset=changeset,
                schema_version=self.schema_version,
                images=merge.snapshot_images(self._snapshot_conn, changeset, shapes),
                foreign_keys=bool(fk),
                sequences=sequences,
            )
        self._release_private(rollback_conn=True)
        return pending

    def _release_private(self, *, rollback_conn: bool) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        conn = getattr(self, "conn", None)
        if rollback_conn and conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
        self._slot.overlay = None
        if self.snapshot is not None:
            self.snapshot.release()
            self.snapshot = None

    def _finish(self, *, rollback_conn: bool) -> None:
        try:
            self._release_private(rollback_conn=rollback_conn)
        finally:
            self.lockdb.end(self.txn_id)

    def rollback(self) -> None:
        self._finish(rollback_conn=True)

    def end(self) -> None:
        """Unregister after a commit (or a failed merge)."""
        with contextlib.suppress(apsw.Error):
            self._release_private(rollback_conn=True)
        self.lockdb.end(self.txn_id)
