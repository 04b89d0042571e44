"""Think 0: where a direct transaction's time goes when writers contend for the merge lock.

Each writer process commits one-row counter transactions (``UPDATE c SET n = n + 1``) as fast
as it can, for ``--duration`` seconds, in one of these ways:

- stock:  the stdlib's ``sqlite3``, ``BEGIN IMMEDIATE`` and SQLite's sleeping busy handler
- ours:   ``sqlite_concurrent`` through the DB-API (``with conn: conn.execute(...)``); the
          transactions run directly, under the merge lock
- ours-lease: ours, and the merge lock is leased as in ``lease`` below (a what-if)
- floor:  what a direct transaction cannot do without, and nothing else: the same merge lock,
          merger connection, crash points, body timing, snapshot-gate probe and post-commit
          housekeeping, called straight (no DB-API layer, no way choice, no objects per
          transaction).  A bound on any direct path built from these parts.
- lease:  the floor, and the holder keeps the merge lock across its own back-to-back
          transactions for up to ``--lease-us`` before handing it on (bounded unfairness,
          DESIGN section 15).  A what-if: the library has no lease.
- sqlite: SQLite's own ``BEGIN IMMEDIATE``, ``UPDATE`` and ``COMMIT`` on a plain APSW
          connection under the same merge lock, and nothing else (SQLite's auto-checkpoint
          runs inside the COMMIT, as for stock): what a hold costs with no Python of ours.
          A hold that follows another process's commit costs more than one alone: SQLite
          drops its page cache and reads the pages again.
- sqlite-hook: sqlite, with the auto-checkpoint done by a Python WAL hook instead (SQLite
          calls it inside every ``COMMIT``, so under the lock): what that Python call costs.

Reported per way: commits/s, CPU per commit (all writers' user+system time over commits),
voluntary and involuntary context switches per commit, the merge lock's hold time per
acquisition (every way but stock), where the writers' time went (running on a CPU, runnable
but waiting for one, asleep: from ``/proc/self/schedstat``, Linux only), latency p50/p99/max,
fewest/most commits per writer, and the largest the WAL grew.  A p99 says little alone: a way
that lets one writer commit while the others sleep (stock's busy handler) has a low p99 and a
worst wait of seconds, as its starved writers commit rarely.

Usage: python benchmarks/contention.py [--writers 1,2,8] [--duration 3] [--ways stock,ours,...]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import resource
import sqlite3
import sys
import tempfile
import threading
import time

from _together import chosen, run_together, wal_database

WAYS = ("stock", "ours", "ours-lease", "floor", "lease", "sqlite", "sqlite-hook")
_UPDATE = "UPDATE c SET n = n + 1 WHERE id = ?"


def _ours(path: str, lease: float | None) -> tuple[object, object]:
    """The DB-API way, and a view of the merge lock's hold times; with ``lease``, the
    process keeps the lock that many seconds from taking it (see ``lease``)."""
    import sqlite_concurrent
    from sqlite_concurrent.locking import oslock

    held = [0.0, 0]
    acquire, release = oslock.ByteLock.acquire, oslock.ByteLock.release
    merge_offset = oslock.offset(oslock.MERGE)

    def timed_acquire(self, **kwargs):
        if self.offset != merge_offset:
            return acquire(self, **kwargs)
        if getattr(self, "_leased_since", None) is not None:
            self._mutex.acquire()  # still ours in the kernel: no system call
            oslock._holders[self.key] = threading.get_ident()
        else:
            acquire(self, **kwargs)
            self._leased_since = time.perf_counter()
        self._taken_at = time.perf_counter()

    def timed_release(self):
        taken = getattr(self, "_taken_at", None)
        if taken is None:
            return release(self)
        now = time.perf_counter()
        held[0] += now - taken
        held[1] += 1
        self._taken_at = None
        if lease is not None and now - self._leased_since <= lease:
            oslock._holders.pop(self.key, None)
            self._mutex.release()  # the kernel lock stays this process's
            return None
        self._leased_since = None
        return release(self)

    oslock.ByteLock.acquire, oslock.ByteLock.release = timed_acquire, timed_release
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")

    def one(k: int) -> None:
        with conn:
            conn.execute(_UPDATE, (k % 2 + 1,))

    def done() -> None:
        lock = conn._db.merge_lock
        if getattr(lock, "_leased_since", None) is not None:
            lock._leased_since = None
            lock._mutex.acquire()
            release(lock)

    one.done = done  # type: ignore[attr-defined]
    return one, held


def _floor(path: str, lease: float | None):
    """The floor (``lease`` None) or the floor with a lease of ``lease`` seconds."""
    import sqlite_concurrent
    from sqlite_concurrent import crashpoints
    from sqlite_concurrent.commit import drain

    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    with conn:  # opens everything a transaction uses
        conn.execute(_UPDATE, (1,))
    db, merger, chooser = conn._db, conn._merger, conn._txns.chooser
    lock = db.merge_lock
    taken_at: list[float | None] = [None]
    held = [0.0, 0]

    def one(k: int) -> None:
        conn._check()
        chooser.body.start()
        if taken_at[0] is None:
            lock.acquire()
            taken_at[0] = time.perf_counter()
        try:
            merger.execute("BEGIN IMMEDIATE")
            crashpoints.reach("direct.begun")
            for _ in merger.cursor().execute(_UPDATE, (k % 2 + 1,)):
                pass
            merger.changes()
            merger.last_insert_rowid()
            merger.execute("COMMIT")
            crashpoints.reach("direct.committed")
        finally:
            now = time.perf_counter()
            if lease is None or now - taken_at[0] > lease:
                held[0] += now - taken_at[0]
                held[1] += 1
                lock.release()
                taken_at[0] = None
                drain.released(lock.path)
        chooser.body.measure()
        db.after_merge()

    def done() -> None:
        if taken_at[0] is not None:
            lock.release()

    one.done = done  # type: ignore[attr-defined]
    return one, held


def _sqlite(path: str, hook: bool):
    """SQLite's statements alone under the merge lock (``hook``: and a Python WAL hook), and
    the lock's hold time."""
    import apsw

    from sqlite_concurrent.commit import merge

    conn = apsw.Connection(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    if hook:
        # Replaces SQLite's own hook, its auto-checkpoint, and does what that does: a passive
        # checkpoint inside each COMMIT once the WAL holds a thousand frames.
        def on_commit(hooked: apsw.Connection, name: str, frames: int) -> int:
            if frames >= 1000:
                hooked.wal_checkpoint(name, apsw.SQLITE_CHECKPOINT_PASSIVE)
            return apsw.SQLITE_OK

        conn.set_wal_hook(on_commit)
    lock = merge.merge_lock(path + "-locks")
    held = [0.0, 0]

    def one(k: int) -> None:
        lock.acquire()
        taken = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for _ in conn.execute(_UPDATE, (k % 2 + 1,)):
                pass
            conn.execute("COMMIT")
        finally:
            held[0] += time.perf_counter() - taken
            held[1] += 1
            lock.release()

    return one, held


def _schedstat() -> tuple[float, float] | None:
    """Seconds this process has run on a CPU, and spent runnable waiting for one."""
    try:
        with open("/proc/self/schedstat") as f:
            on_cpu, run_queue = f.read().split()[:2]
    except OSError:
        return None
    return int(on_cpu) / 1e9, int(run_queue) / 1e9


def _writer(way, path, duration, lease, start, out):
    held = None
    if way == "stock":
        conn = sqlite3.connect(path, isolation_level=None, timeout=60)
        conn.execute("PRAGMA synchronous=NORMAL")

        def one(k: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_UPDATE, (k % 2 + 1,))
            conn.execute("COMMIT")

    elif way in ("ours", "ours-lease"):
        one, held = _ours(path, lease if way == "ours-lease" else None)
    elif way in ("sqlite", "sqlite-hook"):
        one, held = _sqlite(path, hook=way == "sqlite-hook")
    else:
        one, held = _floor(path, lease if way == "lease" else None)
    one(0)
    if held is not None:
        held[:] = [0.0, 0]
    latencies = []
    start.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)
    sched_before, wall_before = _schedstat(), time.perf_counter()
    end = time.perf_counter() + duration
    n = 0
    while True:
        began = time.perf_counter()
        if began >= end:
            break
        one(n)
        latencies.append(time.perf_counter() - began)
        n += 1
    if hasattr(one, "done"):
        one.done()
    after = resource.getrusage(resource.RUSAGE_SELF)
    sched_after, wall = _schedstat(), time.perf_counter() - wall_before
    spent = None
    if sched_before is not None and sched_after is not None:
        spent = (sched_after[0] - sched_before[0], sched_after[1] - sched_before[1], wall)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    switches = (after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw)
    out.put((n, cpu, switches, held, latencies, spent))


def run(way: str, writers: int, duration: float, lease: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "contention.db")
        wal_database(
            path,
            "CREATE TABLE c(id INTEGER PRIMARY KEY, n INT NOT NULL)",
            "INSERT INTO c VALUES (1, 0), (2, 0)",
        )
        # How large the WAL grew: sampled, as it only shrinks when a checkpoint truncates it.
        largest_wal, finished = [0], threading.Event()

        def watch_wal() -> None:
            while not finished.wait(0.02):
                with contextlib.suppress(OSError):
                    largest_wal[0] = max(largest_wal[0], os.path.getsize(path + "-wal"))

        watcher = threading.Thread(target=watch_wal, daemon=True)
        watcher.start()
        try:
            results = run_together(
                _writer,
                [(way, path, duration, lease) for _ in range(writers)],
                timeout=duration + 120,
                settle=1.0,
            )
        finally:
            finished.set()
            watcher.join()
        check = sqlite3.connect(path)
        (total,) = check.execute("SELECT sum(n) FROM c").fetchone()
        check.close()
        for leftover in glob.glob(path + "*"):
            os.unlink(leftover)
    commits = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[4])
    held = [r[3] for r in results if r[3] is not None]
    holds = sum(h[1] for h in held)
    spent = [r[5] for r in results if r[5] is not None]
    wall = sum(s[2] for s in spent)
    return {
        "per_s": commits / duration,
        # Each writer's warm-up transaction commits too.
        "counts_ok": total == commits + writers,
        "cpu_us": 1e6 * sum(r[1] for r in results) / commits,
        "voluntary": sum(r[2][0] for r in results) / commits,
        "involuntary": sum(r[2][1] for r in results) / commits,
        "held_us": 1e6 * sum(h[0] for h in held) / holds if holds else float("nan"),
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[int(0.99 * len(latencies))],
        "max_ms": 1e3 * latencies[-1],
        # Shares of the writers' time: on a CPU, runnable but waiting for one (NaN off Linux).
        "on_cpu": sum(s[0] for s in spent) / wall if wall else float("nan"),
        "run_queue": sum(s[1] for s in spent) / wall if wall else float("nan"),
        "fewest_most": min(r[0] for r in results) / max(r[0] for r in results),
        "wal_mb": largest_wal[0] / 2**20,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", default="1,8", help="comma-separated writer counts")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {WAYS}")
    ap.add_argument("--lease-us", type=float, default=1000)
    args = ap.parse_args()
    ways = chosen(ap, args.ways, WAYS, "ways")
    print(
        "| writers | way | commits/s | CPU us/commit | switches/commit (vol/invol) "
        "| lock held us | writers' time: on a CPU / waiting for one / asleep "
        "| p50 / p99 / max ms | fewest/most | largest WAL MB |"
    )
    print("|---:|---|---:|---:|---|---:|---|---|---:|---:|")
    ok = True
    for writers in (int(w) for w in args.writers.split(",")):
        for way in ways:  # alternating: the machine's noise falls on every way alike
            r = run(way, writers, args.duration, args.lease_us / 1e6)
            ok &= bool(r["counts_ok"])
            held = "-" if r["held_us"] != r["held_us"] else f"{r['held_us']:.0f}"
            on, queued = r["on_cpu"], r["run_queue"]
            asleep = max(0.0, 1 - on - queued)
            spent = "-" if on != on else f"{on:.0%} / {queued:.0%} / {asleep:.0%}"
            print(
                f"| {writers} | {way} | {r['per_s']:,.0f} | {r['cpu_us']:.0f} "
                f"| {r['voluntary']:.2f} / {r['involuntary']:.2f} | {held} | {spent} "
                f"| {r['p50_ms']:.2f} / {r['p99_ms']:.1f} / {r['max_ms']:,.0f} "
                f"| {r['fewest_most']:.2f} | {r['wal_mb']:.0f} |",
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
