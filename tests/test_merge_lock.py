"""The merge lock's waiters: one at a time spins, bounded, the others sleep in the kernel.

Real processes and the kernel's own view of the locks (/proc/locks, where a request a process
sleeps on shows with ``->``): each step waits for a state the kernel shows, never for time.
"""

from __future__ import annotations

import os

import pytest
from conftest import SPAWN, hold_in_child, in_thread, stock, wait_until
from workers import take_merge_lock

from sqlite_concurrent.locking import oslock

pytestmark = pytest.mark.timeout(120)

MERGE, SPINNER = oslock.offset(oslock.MERGE), oslock.offset(oslock.SPINNER)


@pytest.fixture
def db(db_path):
    stock(db_path).close()
    return db_path


def _locks(path: str) -> list[tuple[bool, int]]:
    """(sleeping on it, byte) for each lock on ``path`` that /proc/locks lists."""
    inode = os.stat(path).st_ino
    found = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            waiting = fields[1] == "->"
            fields = fields[2:] if waiting else fields[1:]
            if int(fields[4].split(":")[2]) == inode:
                found.append((waiting, int(fields[5])))
    return found


def _sleeping(path: str) -> int:
    return _locks(path).count((True, MERGE))


def _spinning(path: str) -> bool:
    return (False, SPINNER) in _locks(path)


def _waiter(db: str, spin: float, one_cpu: bool = False, held_for: float = 0.0):
    start, queue = SPAWN.Event(), SPAWN.Queue()
    proc = SPAWN.Process(target=take_merge_lock, args=(start, queue, db, spin, one_cpu, held_for))
    proc.start()
    start.set()
    return proc, queue, start  # the child unpickles ``start`` later: it must outlive this


def _finish(waiters) -> None:
    assert [q.get(timeout=60) for _, q, _ in waiters] == ["taken"] * len(waiters)
    for proc, _, _ in waiters:
        proc.join(30)
        assert proc.exitcode == 0


def _sleeps_without_spinning(db: str, what: str, **waiter) -> None:
    """With the test holding the merge lock, one waiter (``waiter``: its arguments) ends up
    asleep in the kernel and holds no spinner's byte; it takes the lock once released."""
    locks = db + "-locks"
    holder = oslock.ByteLock(locks, oslock.MERGE)
    holder.acquire()
    try:
        waiter_ = _waiter(db, **waiter)
        wait_until(lambda: _sleeping(locks) == 1, what)
        assert not _spinning(locks)
    finally:
        holder.release()
    _finish([waiter_])


def test_one_waiter_spins_and_the_others_sleep_in_the_kernel(db):
    locks = db + "-locks"
    holder = oslock.ByteLock(locks, oslock.MERGE)
    holder.acquire()
    try:
        spinner = _waiter(db, spin=100.0)
        wait_until(lambda: _spinning(locks), "the first waiter spins")
        sleepers = [_waiter(db, spin=100.0) for _ in range(2)]
        wait_until(lambda: _sleeping(locks) == 2, "the next two sleep in the kernel")
        assert _spinning(locks)
        assert _locks(locks).count((False, SPINNER)) == 1
    finally:
        holder.release()
    _finish([spinner, *sleepers])
    assert (False, SPINNER) not in _locks(locks) and _sleeping(locks) == 0


def test_a_spin_ends_in_the_kernel(db):
    _sleeps_without_spinning(db, "the waiter, done spinning, sleeps", spin=0.05)


def test_on_one_cpu_a_waiter_sleeps_at_once(db):
    """Spinning there would only keep the holder from running."""
    _sleeps_without_spinning(db, "the waiter sleeps in the kernel", spin=100.0, one_cpu=True)


def test_a_waiter_whose_holds_outlast_a_spin_sleeps_at_once(db):
    """Holds that long (a commit that fsyncs) would outlast the spin, and the spinner and the
    holder would pass the lock between them while the others sleep."""
    _sleeps_without_spinning(db, "the waiter sleeps in the kernel", spin=100.0, held_for=100.0)


def _slept_after_waiting(db: str, spin: float) -> bool:
    """Whether a lock that spins for ``spin`` seconds says it slept, taken in this process
    while another process's direct transaction holds it (seen spinning, or asleep in the
    kernel, before that one commits)."""
    locks = db + "-locks"
    lock = oslock.ByteLock(locks, oslock.MERGE, spin=spin)
    holder, queue, proceed = hold_in_child(db, ["INSERT INTO t VALUES (1)"], mode="direct")

    def take() -> bool:
        lock.acquire()
        lock.release()
        return lock.slept

    thread, done, outcome = in_thread(take)
    if spin:
        wait_until(lambda: _spinning(locks), "the waiter spins")
    else:
        wait_until(lambda: _sleeping(locks) == 1, "the waiter sleeps in the kernel")
    proceed.set()
    assert queue.get(timeout=60) == "committed"
    holder.join(30)
    assert done.wait(60) and outcome[0][0] == "ok", outcome
    thread.join()
    return outcome[0][1]


def test_a_waiter_says_whether_it_slept(db):
    """A direct transaction reads its body's CPU figures before the wait, and again only if
    the wait may have slept (``ways.Chooser.began``): the lock says which.  A lock taken free
    or at the end of a spin did not; a wait in the kernel did."""
    conn = stock(db)
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.close()
    free = oslock.ByteLock(db + "-locks", oslock.MERGE, spin=100.0)
    free.acquire()
    free.release()
    assert not free.slept
    assert not _slept_after_waiting(db, spin=100.0)
    assert _slept_after_waiting(db, spin=0.0)
