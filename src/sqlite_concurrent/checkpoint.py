"""Keeping the WAL short without slowing merges down (DESIGN section 12).

SQLite's auto-checkpoint runs inside the committing transaction's COMMIT, which for us means
inside the merge lock: measured under 8 writers it held the lock ~500 us per merge instead of
~60 us, capping throughput.  The merger's auto-checkpoint is therefore off, and a passive
checkpoint runs after the merge lock is released, once enough frames have accumulated.
"""

from __future__ import annotations

import apsw

# SQLite's own default auto-checkpoint threshold, in frames.
DEFAULT_THRESHOLD = 1000


class Checkpointer:
    def __init__(self, conn: apsw.Connection, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.conn = conn
        self.threshold = threshold
        self.wal_frames = 0
        conn.wal_autocheckpoint(0)
        conn.set_wal_hook(self._on_commit)

    def _on_commit(self, conn: apsw.Connection, dbname: str, frames: int) -> int:
        self.wal_frames = frames
        return apsw.SQLITE_OK

    def maybe_checkpoint(self) -> None:
        """Run a passive checkpoint if the WAL has grown past the threshold.

        Passive never waits for readers or writers (and never calls the busy handler); another
        process checkpointing at the same time just makes this one a no-op.
        """
        if self.wal_frames < self.threshold:
            return
        self.wal_frames = 0
        try:
            self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.BusyError:
            pass
