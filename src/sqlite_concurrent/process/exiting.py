"""Closing at interpreter exit what the application left open.

A process that exits without ``close()`` (or on an uncaught exception) would leave its holder
row in the lock database and its journal until another process opened the database and reaped
them, and the files beside the database for good.  At exit (:mod:`atexit`, which runs on a
normal exit and after an uncaught exception, not on SIGKILL or ``os._exit``), every connection
still open is closed as ``close()`` would: its transaction rolled back, its journal and, with the
process's last connection, its holder row and the files beside the database removed.

A connection the application drops without closing is let go of as the stdlib's is, as far as
that is safe.  Its collection (at once when the last reference goes, the connection keeping no
reference cycle) only records what it held: the collector may run inside any of our own
critical sections, where letting go would deadlock.  If it had no transaction open, what it
held (its share of the process's holding, its journal, its lock-database connection) is let go
of at the next safe point: the start of the next ``connect()`` in a thread that holds none of
our locks for a live connection (:func:`let_go_idle`).  So a process that opens a connection
per request and never closes one keeps a bounded number of descriptors, and the files beside
the database go with its last connection, as with the stdlib.  One dropped inside a
transaction keeps itself alive instead (:func:`close_later`): at that safe point it is closed
as ``close()`` would close it, its transaction rolled back and its locks released, so that
it does not hold other processes up until this one exits.  At exit, what is left of either is
let go of, and transactions left registered are forgotten (every live connection has closed
first, so those are the only ones of the process left).
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class Leftover:
    """What a connection collected unclosed still holds: ``let_go(at_exit)`` lets go of it.
    ``idle`` is set as the connection is collected: it had no transaction open."""

    __slots__ = ("closing", "idle", "let_go")

    def __init__(self, let_go: Callable[[bool], None]) -> None:
        self.let_go = let_go
        self.idle = False
        self.closing = False  # the connection kept itself, to close at a safe point


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_dropped: list[Leftover] = []  # appended by finalizers only: list.append is atomic
_to_close: list[Any] = []  # connections dropped inside a transaction, kept alive


def track(conn: Any, leftover: Leftover) -> weakref.finalize:
    """Close ``conn`` at exit if it is still open then; if it is collected unclosed, let go of
    ``leftover`` (which must not refer to ``conn``).  Detach the result on close."""
    _live.add(conn)
    finalizer = weakref.finalize(conn, _dropped.append, leftover)
    finalizer.atexit = False
    return finalizer


def close_later(conn: Any) -> None:
    """From a connection's ``__del__``, inside a transaction: keep it, to be closed at the next
    safe point (:func:`take_to_close`)."""
    _to_close.append(conn)


def take_to_close() -> list[Any]:
    return _take_all(_to_close)


def _take_all(items: list[Any]) -> list[Any]:
    """Empty ``items``, which finalizers append to from any thread, without a lock."""
    taken = []
    while items:
        try:
            taken.append(items.pop())
        except IndexError:  # another thread took the last one
            break
    return taken


def pending() -> bool:
    return bool(_dropped or _to_close)


def let_go_idle() -> None:
    """Let go of what connections collected unclosed without a transaction open held.  Call
    only where this thread is inside none of our code and holds none of our locks."""
    kept = []
    for leftover in _take_all(_dropped):
        if leftover.closing:
            continue  # the connection closes itself
        if not leftover.idle:
            kept.append(leftover)
            continue
        with contextlib.suppress(Exception):
            leftover.let_go(False)
    _dropped.extend(kept)


def _at_exit() -> None:
    for conn in take_to_close() + list(_live):
        with contextlib.suppress(Exception):
            conn._close_at_exit()
    for leftover in _take_all(_dropped):
        if not leftover.closing:
            with contextlib.suppress(Exception):
                leftover.let_go(True)


atexit.register(_at_exit)


def weak_proxy(owner: T) -> T:
    """``owner`` (a connection), for an object it owns to refer back to it without a
    reference cycle (see :func:`weakly`).  A proxy, so the owner's attributes cost one more
    lookup (30 ns), not a call."""
    return cast(T, weakref.proxy(owner))


def weakly(method: Callable[..., T]) -> Callable[..., T]:
    """``method`` of an object, without keeping the object alive: what a connection hands to
    objects it owns must not make a reference cycle, or the connection would outlive the
    application's last reference to it, as the stdlib's does not.  Not
    ``weakref.WeakMethod``: building the bound method on every call cost 1.2 us, this 0.4."""
    ref = weakref.ref(method.__self__)  # type: ignore[attr-defined]
    func = method.__func__  # type: ignore[attr-defined]

    def call(*args: Any) -> T:
        owner = ref()
        if owner is None:
            raise ReferenceError("the connection is gone")
        return func(owner, *args)  # type: ignore[no-any-return]

    return call
