"""Group commit and recovery: commit throughput with and without group commit, at
synchronous NORMAL and FULL, 1/4/8 writers (stock SQLite in the same run for scale), and the
time recovery takes after a writer is killed.

    python benchmarks/group_commit.py                     # 4 s per cell
    python benchmarks/group_commit.py --duration 1 --writers 4

Each writer updates its own rows (no conflicts) with no think time, so commits are what is
measured: at FULL every SQLite commit is an fsync of the WAL, which a group shares.  Ours runs
every transaction optimistically (``mode="optimistic"``): a direct one commits on its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import apsw
from _together import run_together

import sqlite_concurrent
from sqlite_concurrent import crashpoints
from sqlite_concurrent.engine import recovery
from sqlite_concurrent.locking import oslock

SPAWN = multiprocessing.get_context("spawn")
ROWS_PER_WRITER = 16


def _setup(path: str, writers: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    conn.executemany(
        "INSERT INTO t VALUES (?, 0)", [(i,) for i in range(writers * ROWS_PER_WRITER)]
    )
    conn.close()


def _writer(engine, path, index, sync, duration, start, results):
    if engine == "stock":
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        conn.execute(f"PRAGMA synchronous={sync}")
        begin = "BEGIN IMMEDIATE"
    else:
        # Optimistic: group commit is how those commit; a direct transaction commits alone.
        conn = sqlite_concurrent.connect(
            path, timeout=60, group_commit=engine == "grouped", mode="optimistic"
        )
        conn.execute(f"PRAGMA synchronous={sync}")
        begin = "BEGIN"
    start.wait()
    commits, latencies = 0, []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        row = index * ROWS_PER_WRITER + commits % ROWS_PER_WRITER
        t0 = time.monotonic()
        conn.execute(begin)
        conn.execute("UPDATE t SET v = v + 1 WHERE id = ?", (row,))
        conn.execute("COMMIT") if engine == "stock" else conn.commit()
        latencies.append(time.monotonic() - t0)
        commits += 1
    conn.close()
    results.put((commits, latencies))


def throughput(engine: str, writers: int, sync: str, duration: float, tmp: str) -> dict:
    path = os.path.join(tmp, f"{engine}-{writers}-{sync}.db")
    _setup(path, writers)
    done = run_together(
        _writer,
        [(engine, path, i, sync, duration) for i in range(writers)],
        timeout=duration + 120,
        settle=1.0,  # let every writer open its connections before the clock starts
    )
    commits = sum(c for c, _ in done)
    lat = sorted(x for _, ls in done for x in ls)
    conn = sqlite3.connect(path)
    total = conn.execute("SELECT sum(v) FROM t").fetchone()[0]
    conn.close()
    return {
        "engine": engine,
        "writers": writers,
        "synchronous": sync,
        "txn_per_s": commits / duration,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0.0,
        "ok": total == commits,  # every acknowledged commit is there, once
    }


def _victim(path: str, rows: int) -> None:
    conn = sqlite_concurrent.connect(path, timeout=60, mode="optimistic")
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = v + 1 WHERE id < ?", (rows,))
    conn.commit()  # dies at merge.locked: row locks held, journal hot


def _ready(path: str) -> int:
    locks = apsw.Connection(path + "-locks")
    try:
        sql = "SELECT count(*) FROM transactions WHERE state = 'ready'"
        return locks.execute(sql).fetchone()[0]
    except (apsw.SQLError, apsw.BusyError):  # the victim is still setting it up
        return 0
    finally:
        locks.close()


def _kill_waiting_victim(path: str, rows: int) -> None:
    """Leave a writer killed while waiting to commit: row locks held, its journal hot.  It
    waits because we hold the merge lock until it has marked itself ready."""
    lock = oslock.ByteLock(path + "-locks", oslock.MERGE)
    lock.acquire()
    try:
        os.environ[crashpoints.ENV] = "merge.locked"
        try:
            proc = SPAWN.Process(target=_victim, args=(path, rows))
            proc.start()
        finally:
            del os.environ[crashpoints.ENV]
        deadline = time.monotonic() + 60
        while not _ready(path):
            if time.monotonic() > deadline:
                raise RuntimeError("the victim never asked to commit")
            time.sleep(0.005)
    finally:
        lock.release()
    proc.join(60)
    if proc.exitcode != -signal.SIGKILL:
        raise RuntimeError(f"the victim exited with {proc.exitcode}")


def recovery_time(tmp: str, rows: int, repeats: int) -> dict:
    """A writer killed waiting to commit, holding ``rows`` row locks and a hot journal."""
    timings, open_timings = [], []
    for i in range(repeats):
        path = os.path.join(tmp, f"recover-{rows}-{i}.db")
        _setup(path, max(1, rows // ROWS_PER_WRITER + 1))
        sqlite_concurrent.connect(path).close()  # its first open needs the merge lock
        _kill_waiting_victim(path, rows)
        t0 = time.perf_counter()
        report = recovery.recover(path)
        timings.append(time.perf_counter() - t0)
        if not report or report[0].journal != "deleted":
            raise RuntimeError(f"unexpected recovery: {report}")
        # The same again, as a connection's open finds it.
        _kill_waiting_victim(path, rows)
        t0 = time.perf_counter()
        sqlite_concurrent.connect(path).close()
        open_timings.append(time.perf_counter() - t0)
    return {
        "row_locks": rows,
        "recover_ms_median": 1000 * statistics.median(timings),
        "recover_ms_max": 1000 * max(timings),
        "open_with_recovery_ms_median": 1000 * statistics.median(open_timings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,4,8")
    parser.add_argument("--sync", default="NORMAL,FULL")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5, help="recovery timings per size")
    parser.add_argument("--skip-throughput", action="store_true", help="only time recovery")
    parser.add_argument("--json", type=Path, default=Path("bench-results/group_commit.json"))
    parser.add_argument(
        "--dir", default=None, help="where the databases go (a real disk: fsync must cost)"
    )
    args = parser.parse_args(argv)
    results, recoveries = [], []
    with tempfile.TemporaryDirectory(prefix="sqlite-concurrent-group-", dir=args.dir) as tmp:
        for sync in [] if args.skip_throughput else args.sync.split(","):
            for writers in [int(w) for w in args.writers.split(",")]:
                row = {}
                for engine in ("stock", "grouped", "ungrouped"):
                    r = throughput(engine, writers, sync, args.duration, tmp)
                    results.append(r)
                    row[engine] = r
                    print(
                        f"{sync:>6} {writers} writers {engine:>9}: {r['txn_per_s']:8,.0f} txn/s"
                        f"  p99 {r['p99_ms']:6.1f} ms  {'ok' if r['ok'] else 'LOST/DUPLICATED'}",
                        file=sys.stderr,
                        flush=True,
                    )
        for rows in (1, 100, 1000):
            recoveries.append(recovery_time(tmp, rows, args.repeats))
            print(recoveries[-1], file=sys.stderr, flush=True)
    print(
        "| synchronous | writers | stock txn/s | grouped txn/s | ungrouped txn/s "
        "| grouped/ungrouped | grouped/stock |"
    )
    print("|---|---|---|---|---|---|---|")
    by = {(r["synchronous"], r["writers"], r["engine"]): r for r in results}
    for sync in [] if args.skip_throughput else args.sync.split(","):
        for writers in [int(w) for w in args.writers.split(",")]:
            s, g, u = (
                by[(sync, writers, e)]["txn_per_s"] for e in ("stock", "grouped", "ungrouped")
            )
            print(
                f"| {sync} | {writers} | {s:,.0f} | {g:,.0f} | {u:,.0f} "
                f"| {g / u:.2f}x | {g / s:.2f}x |"
            )
    print()
    print(
        "| row locks held by the killed writer | recover() median / max ms "
        "| open with recovery median ms |"
    )
    print("|---|---|---|")
    for r in recoveries:
        print(
            f"| {r['row_locks']} | {r['recover_ms_median']:.1f} / {r['recover_ms_max']:.1f} | "
            f"{r['open_with_recovery_ms_median']:.1f} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"throughput": results, "recovery": recoveries, "cpus": os.cpu_count()}, indent=2
        )
        + "\n"
    )
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
