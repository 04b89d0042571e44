"""Waiting for locks without polling (architecture.md, "Locks and waiting").

A waiter binds a datagram socket named after its transaction *before* it queues in the lock
database, so a release that follows can always reach it; whoever releases sends one datagram,
after committing, to each waiter that can go on now (:meth:`.Grants.due`).  The waiter sleeps
in ``select()`` on that socket and on a pidfd per blocking process: a release wakes it at once,
and so does the death of a holder (the kernel makes the pidfd readable), after which the dead
holder is reaped.  The only timer is the connection's ``timeout``.

Sockets live in Linux's abstract namespace: no files to clean up after a crash.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterable

import apsw

from ..errors import DeadlockError, LockTimeoutError, OperationalError
from .grants import Blocker, Victim
from .lockdb import LockDB

# Which thread runs each transaction of this process.  A thread cannot wait for a lock held by
# its own other connection (it would wait for itself), so such blockers are handled at once.
_thread_of_txn: dict[int, int] = {}


def _forked() -> None:
    # The parent's transactions are not the child's, though its thread ids may be the same.
    _thread_of_txn.clear()


os.register_at_fork(after_in_child=_forked)


def owned_by_this_thread(txn_id: int) -> None:
    _thread_of_txn[txn_id] = threading.get_ident()


def forget(txn_id: int) -> None:
    _thread_of_txn.pop(txn_id, None)


def _same_thread() -> frozenset[int]:
    me = threading.get_ident()
    return frozenset(t for t, thread in list(_thread_of_txn.items()) if thread == me)


def _address(lockdb: LockDB, txn_id: int) -> bytes:
    st = os.stat(lockdb.path)
    return b"\0sqlite-concurrent:%d:%d:%d" % (st.st_dev, st.st_ino, txn_id)


def wake(lockdb: LockDB, txn_ids: Iterable[int]) -> None:
    """Nudge those of the waiting transactions ``txn_ids`` that may go on now
    (:meth:`.Grants.due`) to look at the lock database again."""
    txn_ids = list(txn_ids)
    if txn_ids:
        # Unless the lock database cannot be read now: waking too many only costs each a look.
        with contextlib.suppress(apsw.Error, OperationalError):
            txn_ids = lockdb.grants.due(txn_ids)
    if not txn_ids:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for txn_id in txn_ids:
            # Gone (finished waiting) or a full buffer (already nudged): either is fine.
            with contextlib.suppress(OSError):
                sock.sendto(b"w", _address(lockdb, txn_id))
    # The woken one needs the lock just released, and a CPU: the kernel queues it on this
    # one, behind the caller, which would otherwise run on (into its next transaction)
    # while the lock sits free.  Measured: 8 table-level writers handing one table lock on,
    # 1 ms from the datagram to the wakee running, and 23% more commits with the yield.
    os.sched_yield()


def _pidfds(blockers: list[Blocker]) -> tuple[list[int], bool]:
    fds, gone = [], False
    for pid in {b.pid for b in blockers if b.pid and b.pid != os.getpid()}:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            gone = True
    return fds, gone


def acquire(
    lockdb: LockDB,
    txn_id: int,
    requests: list[tuple[str, str]],
    timeout: float,
    *,
    register: tuple[str, float] | None = None,
) -> list[Blocker]:
    """Hold every ``(resource, mode)`` of ``requests``, waiting as long as ``timeout``.

    ``register``: (lock level, began at) of a transaction not yet in the lock database, which
    is registered in the same write as its first grants.

    :returns: the blockers that were waited for (empty if granted at once).
    :raises DeadlockError: this transaction was picked to break a wait-for cycle.
    :raises LockTimeoutError: still blocked after ``timeout`` seconds.
    """
    granted = lockdb.grants.fast_grant(txn_id, requests, register=register)
    if granted == len(requests):
        return []
    requests = requests[granted:]
    mine = _same_thread()
    blockers = _try(lockdb, txn_id, requests, mine, queue=False)
    if not blockers:
        return []
    waited: list[Blocker] = []
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(_address(lockdb, txn_id))
        sock.setblocking(False)
        try:
            while True:
                blockers = _try(lockdb, txn_id, requests, mine, queue=True)
                if not blockers:
                    return waited
                waited.extend(blockers)
                # Woken only when it may go on (Grants.due), or when a blocker's process died.
                if _sleep(sock, blockers, deadline):
                    wake(lockdb, lockdb.reap_and_wake())
        except BaseException:
            wake(lockdb, lockdb.grants.stop_waiting(txn_id))
            raise


def _try(
    lockdb: LockDB,
    txn_id: int,
    requests: list[tuple[str, str]],
    mine: frozenset[int],
    *,
    queue: bool,
) -> list[Blocker]:
    """One attempt (:meth:`.Grants.try_acquire`); wakes whom it must."""
    try:
        blockers, to_wake = lockdb.grants.try_acquire(
            txn_id, requests, queue=queue, same_thread=mine
        )
    except Victim as v:
        wake(lockdb, v.wake)
        raise _deadlock(v) from None
    wake(lockdb, to_wake)
    return blockers


def _sleep(sock: socket.socket, blockers: list[Blocker], deadline: float) -> bool:
    """Sleep in the kernel until a wake-up comes to ``sock``, a blocker's process ends, or the
    deadline passes; returns whether a blocker's process is gone.

    :raises LockTimeoutError: the deadline has passed.
    """
    fds, gone = _pidfds(blockers)
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(blockers)
        if not gone:
            # poll, not select: descriptors may exceed FD_SETSIZE in a busy process.
            poller = select.poll()
            for fd in (sock.fileno(), *fds):
                poller.register(fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(remaining * 1000)}
            gone = any(fd in ready for fd in fds)
        with contextlib.suppress(BlockingIOError):
            while sock.recv(16):
                pass
    finally:
        for fd in fds:
            os.close(fd)
    return gone


def _deadlock(v: Victim) -> DeadlockError:
    return DeadlockError(
        f"deadlock: transactions {v.cycle} wait for each other (at {v.resource}); "
        "this one, the youngest, was rolled back (retry it)",
        resource=v.resource,
        cycle=tuple(v.cycle),
    )


def _timeout(blockers: list[Blocker]) -> LockTimeoutError:
    b = blockers[0]
    return LockTimeoutError(
        f"database is locked: {b.resource} is held by transaction {b.txn_id} of pid {b.pid}",
        resource=b.resource,
        holder_pid=b.pid,
    )
