"""Closing at interpreter exit what the application left open.

A process that exits without ``close()`` (or on an uncaught exception) would leave its holder
row in the lock database and its journal until another process opened the database and reaped
them, and the files beside the database for good.  At exit (:mod:`atexit`, which runs on a
normal exit and after an uncaught exception, not on SIGKILL or ``os._exit``), every connection
still open is closed as ``close()`` would: its transaction rolled back, its journal and, with the
process's last connection, its holder row and the files beside the database removed.

A connection the application dropped without closing is gone by then; what it held for the
database (its share of the process's holding, its journal, its lock-database connection) is let
go of too, and transactions it left registered are forgotten (every live connection has closed
first, so those are the only ones of the process left).  Its garbage collection only records
that: the collector may run inside any of our own critical sections, where letting go would
deadlock.
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from collections.abc import Callable
from typing import Any

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_dropped: list[Callable[[], None]] = []


def track(conn: Any, let_go: Callable[[], None]) -> weakref.finalize:
    """Close ``conn`` at exit if it is still open then; if it is collected unclosed, run
    ``let_go`` (which must not refer to ``conn``) at exit.  Detach the result on close."""
    _live.add(conn)
    finalizer = weakref.finalize(conn, _dropped.append, let_go)
    finalizer.atexit = False
    return finalizer


def _at_exit() -> None:
    for conn in list(_live):
        with contextlib.suppress(Exception):
            conn._close_at_exit()
    while _dropped:
        with contextlib.suppress(Exception):
            _dropped.pop()()


atexit.register(_at_exit)
