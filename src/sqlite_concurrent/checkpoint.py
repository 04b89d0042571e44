"""Keeping the WAL bounded under overlapping transactions (DESIGN section 12).

Two mechanisms:

- SQLite's auto-checkpoint would run inside the merge's COMMIT, i.e. inside the merge lock:
  measured under 8 writers it held the lock ~500 us per merge instead of ~60 us.  The merger's
  auto-checkpoint is off, and a passive checkpoint runs after the merge lock is released.
- Each live transaction pins a snapshot, so with transactions always overlapping the WAL never
  restarts (a prototype grew it to 4.8 GB in 30 s).  Nearing ``wal_limit`` bytes (at 80%) the
  checkpointer closes the snapshot gate: new transactions wait in the kernel before pinning,
  transactions already running finish and unpin, a TRUNCATE checkpoint resets the WAL, and the
  gate reopens.
  The wait is bounded by ``checkpoint_wait``; if an old transaction or a stock reader still holds
  the WAL then, the checkpointer gives up, reopens the gate and tries again once the WAL has
  grown by another quarter of the limit.
"""

from __future__ import annotations

import contextlib
import time

import apsw

from . import oslock, snapshot

DEFAULT_PASSIVE_FRAMES = 1000  # SQLite's own auto-checkpoint default
DEFAULT_WAL_LIMIT = 64 * 2**20
DEFAULT_CHECKPOINT_WAIT = 2.0
_TRIGGER = 0.8  # fraction of wal_limit at which a restart starts


class Checkpointer:
    """Owned by one connection; ``conn`` is its stock merger connection."""

    def __init__(
        self,
        conn: apsw.Connection,
        locks_path: str,
        *,
        wal_limit: int = DEFAULT_WAL_LIMIT,
        checkpoint_wait: float = DEFAULT_CHECKPOINT_WAIT,
        busy_timeout_ms: int,
        wal_files: snapshot.WalFiles,
    ) -> None:
        self.conn = conn
        self._wal_files = wal_files
        self.gate = oslock.ByteLock(locks_path, oslock.SNAPSHOT_GATE)
        self.wal_limit = wal_limit
        self.checkpoint_wait = checkpoint_wait
        self._busy_timeout_ms = busy_timeout_ms
        self.wal_frames = 0
        self._passive_at = DEFAULT_PASSIVE_FRAMES
        self.passives = 0  # passive checkpoints run
        self.restarts = 0
        self.failed_restarts = 0  # gave up after waiting for readers (old transactions)
        self.collisions = 0  # another checkpoint was running: nothing waited, retry soon
        self._restart_at = 0  # frames; raised after a restart that waited and still failed
        conn.wal_autocheckpoint(0)
        conn.set_wal_hook(self._on_commit)

    def _on_commit(self, conn: apsw.Connection, dbname: str, frames: int) -> int:
        self.wal_frames = frames
        return apsw.SQLITE_OK

    def after_merge(self, page_size: int) -> None:
        """Called after each merge, outside the merge lock."""
        frames = self.wal_frames
        # Restarting takes a few milliseconds during which merges still append frames, so it
        # starts with headroom left: ``wal_limit`` is a bound, not a trigger (the 10-minute
        # soak overshot a 64 MiB trigger by 0.4 MB).
        if frames * page_size >= self.wal_limit * _TRIGGER and frames >= self._restart_at:
            self._restart(frames, page_size)
        elif frames >= self._passive_at:
            behind = self._not_backfilled()
            if behind is not None and behind < DEFAULT_PASSIVE_FRAMES:
                # Another process checkpointed since: every process counts the frames its own
                # commits see, so without this look at the shared WAL index eight writers ran
                # eight times the checkpoints needed (measured: 112 in 8 s, 2.3 ms each, where
                # the WAL grew by 25 thousand frames).
                self._passive_at = frames + DEFAULT_PASSIVE_FRAMES - behind
                return
            self._passive_at = frames + DEFAULT_PASSIVE_FRAMES
            self.passives += 1
            # Passive never waits (nor calls the busy handler); a concurrent checkpoint in
            # another process just makes this one a no-op.
            with contextlib.suppress(apsw.BusyError):
                self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)

    def _not_backfilled(self) -> int | None:
        """Frames of the WAL no checkpoint has copied into the database yet, from the WAL index
        (``None`` while it is being updated)."""
        header = snapshot.read_wal_header(self._wal_files.shm)
        if header is None:
            return None
        return header.max_frame - header.backfilled

    def _restart(self, frames: int, page_size: int) -> None:
        # Another process closing the gate is already doing this; do not queue behind it.
        if not self.gate.try_acquire():
            return
        started = time.monotonic()
        try:
            self.conn.set_busy_timeout(int(self.checkpoint_wait * 1000))
            try:
                self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
                busy = False
            except apsw.BusyError:
                busy = True
            finally:
                self.conn.set_busy_timeout(self._busy_timeout_ms)
        finally:
            self.gate.release()
        if not busy:
            self.restarts += 1
            self._restart_at = 0
            self._passive_at = DEFAULT_PASSIVE_FRAMES
        elif time.monotonic() - started < self.checkpoint_wait / 2:
            # SQLite returns BUSY at once, without the busy handler, while another connection
            # (a passive checkpoint elsewhere) holds the checkpoint lock: just try again later.
            self.collisions += 1
        else:
            # Readers held the WAL for the whole wait (a long transaction, a stock reader).
            # Do not hold everyone back again until the WAL has grown by a quarter limit more.
            self.failed_restarts += 1
            self._restart_at = frames + self.wal_limit // (4 * page_size)
