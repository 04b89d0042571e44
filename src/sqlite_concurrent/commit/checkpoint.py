"""Keeping the WAL bounded under overlapping transactions (architecture.md, "Checkpoints").

Two mechanisms:

- A passive checkpoint every thousand frames, as SQLite's auto-checkpoint runs; but SQLite's
  runs inside every COMMIT once the WAL holds that many frames, which with snapshots pinned is
  every commit: measured under 8 writers it held the merge lock ~500 us per merge instead of
  ~60 us.  The merger's auto-checkpoint is off, and its WAL hook runs one per thousand frames.
  When nothing reads the WAL, it runs there, inside the COMMIT and so under the merge lock: it
  copies every frame, and the next writer, who begins only once the lock is released, starts
  the WAL again from its start, as stock SQLite's writers do.  Run after the release, the next
  writer would already be reading the WAL and the WAL could only grow (to 51 MB in 5 s under 8
  writers at think 0, then held everyone back for a restart; docs/benchmarks.md).  When
  something reads the WAL, the checkpoint could not copy all of it anyway: it runs after the
  merge lock is released.
- Each live transaction pins a snapshot, so with transactions always overlapping the WAL never
  restarts (a prototype grew it to 4.8 GB in 30 s).  Nearing ``wal_limit`` bytes (at 80%) the
  checkpointer closes the snapshot gate: new transactions wait in the kernel before pinning,
  transactions already running finish and unpin, a TRUNCATE checkpoint resets the WAL, and the
  gate reopens.

The checkpointer and the merge never wait on each other.  A TRUNCATE checkpoint holds SQLite's
WAL write lock while it waits for readers, and the readers it would wait for are transactions
that end only through a merge, whose ``BEGIN IMMEDIATE`` needs that write lock: each would sit
in its busy handler until the checkpoint gave up.  So the checkpoint runs only under the merge
lock (no merger then wants the write lock) and never waits inside SQLite (busy timeout 0): it
either succeeds at once or returns BUSY, and is tried again each time a transaction lets its
snapshot go (:mod:`.drain`), for at most ``checkpoint_wait`` seconds.

A reader that is not one of ours (a stock connection in a read transaction, Litestream) keeps a
restart from ever succeeding while it stays: holding transactions back for it would only stall
them.  When one holds a WAL read lock the gate stays open and only a passive checkpoint runs;
``pinned_by`` names it (:mod:`.wal_readers`).  When Litestream replicates the database, no
checkpoint of ours runs at all: Litestream asks applications to leave checkpoints to it
(https://litestream.io/tips/, "Disable autocheckpoints for high write load servers"); it then
bounds the WAL itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable

import apsw

from ..locking import oslock
from ..storage import snapshot, wal_readers
from . import drain

log = logging.getLogger("sqlite_concurrent")

DEFAULT_PASSIVE_FRAMES = 1000  # SQLite's own auto-checkpoint default
DEFAULT_WAL_LIMIT = 64 * 2**20
DEFAULT_CHECKPOINT_WAIT = 2.0
_TRIGGER = 0.8  # fraction of wal_limit at which a restart starts


class Checkpointer:
    """Owned by one connection; ``conn`` is its stock merger connection."""

    def __init__(
        self,
        conn: apsw.Connection,
        db_path: str,
        *,
        merge_lock: oslock.ByteLock,
        wal_limit: int = DEFAULT_WAL_LIMIT,
        checkpoint_wait: float = DEFAULT_CHECKPOINT_WAIT,
        busy_timeout_ms: int,
        wal_files: snapshot.WalFiles,
        our_pids: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self.conn = conn
        self._db_path = db_path
        self._locks_path = db_path + "-locks"
        self._wal_files = wal_files
        self._merge_lock = merge_lock
        self._our_pids = our_pids
        self.gate = oslock.ByteLock(self._locks_path, oslock.SNAPSHOT_GATE)
        self.wal_limit = wal_limit
        self.checkpoint_wait = checkpoint_wait
        self._busy_timeout_ms = busy_timeout_ms
        self.wal_frames = 0
        self._passive_at = DEFAULT_PASSIVE_FRAMES
        self.passives = 0  # passive checkpoints run
        self.restarts = 0
        self.failed_restarts = 0  # gave up after waiting for readers (old transactions)
        self.collisions = 0  # attempts that found a merge or another checkpoint running
        self.gate_closures = 0  # times new transactions were held back for a restart
        self.attempts = 0  # TRUNCATE checkpoints tried (each returns at once)
        self.pinned_skips = 0  # restarts not tried: a reader not ours holds the WAL
        self.pinned_by: list[wal_readers.Pin] = []
        # Litestream's tables are looked for after the first merge: connect() reads nothing
        # from the database, as the stdlib's does not.
        self.litestream = wal_readers.litestream_managed(db_path, tables=False)
        self._litestream_tables_seen = False
        self._restart_at = 0  # frames; raised after a restart that cannot succeed yet
        conn.wal_autocheckpoint(0)
        # Weakly: the merger keeps its hook, and a reference cycle would keep both alive after
        # the application's last reference to the connection (see ``exiting.py``).
        checkpointer = weakref.ref(self)

        def on_commit(_conn: apsw.Connection, _dbname: str, frames: int) -> int:
            me = checkpointer()
            if me is not None:
                if frames < me.wal_frames:
                    # The WAL began again from its start (a commit after a checkpoint that
                    # copied every frame, here or elsewhere): count from there.
                    me._passive_at = min(me._passive_at, frames + DEFAULT_PASSIVE_FRAMES)
                me.wal_frames = frames
                if frames >= me._passive_at:  # once per thousand frames
                    me._checkpoint_in_commit(frames)
            return apsw.SQLITE_OK

        conn.set_wal_hook(on_commit)

    def _checkpoint_in_commit(self, frames: int) -> None:
        """Inside a COMMIT on the merger, under the merge lock, once the WAL holds ``frames``:
        a passive checkpoint, if nothing reads the WAL (see the module's docstring)."""
        if self.litestream:
            return
        # Nothing may escape: SQLite calls this after the transaction committed, and an
        # exception here would make its COMMIT look failed.  The next merge tries again.
        try:
            if not wal_readers.any_reader(self._wal_files.shm):
                self._passive_due(frames)
        except Exception:
            log.warning("sqlite_concurrent: a checkpoint inside a commit failed", exc_info=True)

    def after_merge(self, page_size: int) -> None:
        """Called after each merge, outside the merge lock."""
        if not self._litestream_tables_seen:
            self._litestream_tables_seen = True
            self.litestream = wal_readers.litestream_managed(self._db_path)
        if self.litestream:
            return
        frames = self.wal_frames
        # Restarting takes a few milliseconds during which merges still append frames, so it
        # starts with headroom left: ``wal_limit`` is a bound, not a trigger (the 10-minute
        # soak overshot a 64 MiB trigger by 0.4 MB).
        if frames * page_size >= self.wal_limit * _TRIGGER and frames >= self._restart_at:
            self._restart(frames, page_size)
        elif frames >= self._passive_at:
            self._passive_due(frames)

    def _passive_due(self, frames: int) -> None:
        """A passive checkpoint, due since the WAL reached ``frames`` frames."""
        behind = self._not_backfilled()
        if behind is not None and behind < DEFAULT_PASSIVE_FRAMES:
            # Another process checkpointed since: every process counts the frames its own
            # commits see, so without this look at the shared WAL index eight writers ran
            # eight times the checkpoints needed (measured: 112 in 8 s, 2.3 ms each, where
            # the WAL grew by 25 thousand frames).
            self._passive_at = frames + DEFAULT_PASSIVE_FRAMES - behind
            return
        self._passive_at = frames + DEFAULT_PASSIVE_FRAMES
        self._passive()

    def _passive(self) -> None:
        self.passives += 1
        # Passive never waits (nor calls the busy handler); a concurrent checkpoint in
        # another process just makes this one a no-op.
        with contextlib.suppress(apsw.BusyError):
            self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        # It held the checkpoint lock: a restart that found it taken is waiting to try again.
        drain.released(self._locks_path)

    def _not_backfilled(self) -> int | None:
        """Frames of the WAL no checkpoint has copied into the database yet, from the WAL index
        (``None`` while it is being updated)."""
        header = snapshot.read_wal_header(self._wal_files.shm)
        if header is None:
            return None
        return header.max_frame - header.backfilled

    def _restart(self, frames: int, page_size: int) -> None:
        self.litestream = wal_readers.litestream_managed(self._db_path)
        if self.litestream:
            return
        header = snapshot.read_wal_header(self._wal_files.shm)
        if header is not None and header.max_frame < frames:
            # Another process restarted the WAL since this one's merger last committed (with
            # group commit it may not have merged for a while): the count is stale.
            self.wal_frames = header.max_frame
            if header.max_frame * page_size < self.wal_limit * _TRIGGER:
                return
        pins = self._foreign_pins()
        self.pinned_by = self._held(pins, page_size)
        if self.pinned_by:
            self.pinned_skips += 1
            self._passive()
            # Look again after a sixteenth of the limit: /proc/locks is not read per merge.
            self._restart_at = frames + max(1, self.wal_limit // (16 * page_size))
            return
        # Another process closing the gate is already doing this; do not queue behind it.
        if not self.gate.try_acquire():
            return
        self.gate_closures += 1
        try:
            done = self._truncate_once_drained(foreign=bool(pins))
        finally:
            self.gate.release()
        if done:
            self.restarts += 1
            self._restart_at = 0
            self._passive_at = DEFAULT_PASSIVE_FRAMES
        else:
            # Something held the WAL for the whole wait (a long transaction, a reader in one
            # of our own processes).  Do not hold everyone back again until the WAL has grown
            # by a quarter limit more.
            self.failed_restarts += 1
            self._restart_at = frames + self.wal_limit // (4 * page_size)

    def _foreign_pins(self) -> list[wal_readers.Pin]:
        if not wal_readers.any_reader(self._wal_files.shm):
            return []
        return wal_readers.pins(
            self._db_path + "-shm", besides=self._our_pids(), shm_fd=self._wal_files.shm
        )

    def _held(self, pins: list[wal_readers.Pin], page_size: int) -> list[wal_readers.Pin]:
        """The readers among ``pins`` that have held the WAL a while: those that saw the WAL
        a sixteenth of the limit ago or earlier.  A stock reader's short query sees the WAL as
        it is now, and ends soon."""
        header = snapshot.read_wal_header(self._wal_files.shm)
        if not pins or header is None:
            return []
        old = max(1, self.wal_limit // (16 * page_size))
        # A reader on read lock 0 reads the database file alone: it came while every frame was
        # backfilled, and no frame can be backfilled past it (walformat.html, "WAL Locks").
        seen = {
            pin: header.backfilled if pin.slot == 0 else pin.mark if pin.mark is not None else 0
            for pin in pins
        }
        return [pin for pin in pins if header.max_frame - seen[pin] >= old]

    def _truncate_once_drained(self, *, foreign: bool) -> bool:
        """With the gate closed: try at once, then again each time a snapshot is let go.

        A reader outside sqlite_concurrent sends no datagram when its query ends: while one
        holds the WAL, try again every 10 ms too (the pace of SQLite's own busy handler).
        """
        deadline = time.monotonic() + self.checkpoint_wait
        try:
            listener = drain.Listener(self._locks_path)
        except OSError:
            return self._try_truncate()
        with listener:
            while not self._try_truncate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                listener.wait(min(left, 0.01) if foreign else left)
        return True

    def _try_truncate(self) -> bool:
        self.attempts += 1
        # Under the merge lock no merger waits for SQLite's write lock, and with no busy
        # handler the checkpoint waits for no reader: it never stalls a merge, nor a merge it.
        if not self._merge_lock.try_acquire():
            self.collisions += 1
            return False
        try:
            self.conn.set_busy_timeout(0)
            try:
                self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            except apsw.BusyError:
                return False
            finally:
                self.conn.set_busy_timeout(self._busy_timeout_ms)
        finally:
            self._merge_lock.release()
        return True
