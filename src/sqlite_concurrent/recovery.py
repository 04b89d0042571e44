"""Cleaning up after processes that died (DESIGN section 11).

A dead process's SQLite work needs nothing from us: its merge either committed (SQLite's WAL
made it durable) or did not (SQLite discards it), and the commit marker, written in the same
SQLite transaction, says which.  What it leaves behind is in the lock database: its holder row,
its transactions, their locks and queue places.  Recovery releases those and reports, for each
transaction, whether it committed.  It runs whenever a connection opens, whenever a lock waiter
sees a holder die, and on demand (``sqlite-concurrent recover``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import apsw

from . import merge
from .lockdb import LockDB


@dataclass(frozen=True)
class Recovered:
    pid: int
    locks_released: int
    committed: tuple[int, ...]  # its transactions whose commit marker exists
    discarded: tuple[int, ...]  # the others: never committed, nothing of them is visible


def recover(db_path: str) -> list[Recovered]:
    """Release everything dead processes hold on ``db_path``; report what each left.

    :raises apsw.Error: the database or its lock database cannot be opened.
    """
    if not os.path.exists(db_path + "-locks"):
        return []
    lockdb = LockDB(db_path)
    try:
        reaped = lockdb.reap()
    finally:
        lockdb.close()
    if not reaped:
        return []
    db = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        report = []
        for r in reaped:
            done = tuple(t for t in r.txn_ids if merge.is_committed(db, t))
            report.append(
                Recovered(r.pid, r.locks, done, tuple(t for t in r.txn_ids if t not in done))
            )
        return report
    finally:
        # Not a connection of ours the process keeps: this is the CLI's own, short-lived one,
        # opened after the lock work is done, in a process that holds no other lock on db.
        db.close()
