"""Think-0 ceiling: how fast can processes commit one-row transactions, by how they take turns?

Raw APSW, no DB-API layer, so this bounds what any design built on these choices can reach:

- busy:    stock SQLite, waiters in SQLite's sleeping busy handler (unfair: the holder runs on)
- fair:    waiters block on a kernel byte lock (OFD fcntl), as sqlite_concurrent's merge lock does
- combine: fair, and the lock holder also commits the rows that waiting processes published in a
           shared file (flat combining), then writes each its new rowid

Each with ``--marker``: every transaction also inserts a commit-marker row, as ours does.
``--inside-us``/``--outside-us`` add that much CPU work (a busy loop, standing in for a DB-API
layer's Python) inside each lock hold and between holds: how the ceiling falls as each
transaction costs more CPU.

Usage: python benchmarks/handoff.py [--writers 8] [--duration 3] [--marker]
                                    [--inside-us 0] [--outside-us 0]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sqlite3
import struct
import sys
import tempfile
import time

from _together import run_together, wal_database

_SLOT = 64  # bytes per writer in the request file
_HEADER = struct.Struct("=QQq")  # requests made, requests done, last rowid
_REQUEST = struct.Struct("=qq")  # writer, seq
_BYTE = 1 << 40


def _flock(kind: int) -> bytes:
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, _BYTE, 1, 0)


def _spin(us: float) -> None:
    until = time.perf_counter() + us / 1e6
    while time.perf_counter() < until:
        pass


def _writer(mode, path, writers, index, duration, marker, inside, outside, start, out):
    import apsw

    conn = apsw.Connection(path)
    conn.set_busy_timeout(60_000)
    conn.execute("PRAGMA synchronous=NORMAL")
    lock = os.open(path + "-handoff-lock", os.O_RDWR | os.O_CREAT, 0o644)
    box = os.open(path + "-handoff-box", os.O_RDWR)
    exclusive, unlock = _flock(fcntl.F_WRLCK), _flock(fcntl.F_UNLCK)
    setlk, setlkw = getattr(fcntl, "F_OFD_SETLK", 37), getattr(fcntl, "F_OFD_SETLKW", 38)
    n = carried = holds = requests = 0

    def insert(writer: int, seq: int) -> None:
        conn.execute("INSERT INTO events(writer, seq) VALUES (?, ?)", (writer, seq))
        if marker:
            conn.execute("INSERT INTO markers(at) VALUES (NULL)")

    def hold(own: tuple[int, int]) -> None:
        nonlocal carried, holds
        holds += 1
        conn.execute("BEGIN IMMEDIATE")
        _spin(inside)
        insert(*own)
        done = []
        if mode == "combine":
            board = os.pread(box, _SLOT * writers, 0)
            for other in range(writers):
                made, finished, _ = _HEADER.unpack_from(board, other * _SLOT)
                if other != index and made > finished:
                    insert(*_REQUEST.unpack_from(board, other * _SLOT + _HEADER.size))
                    done.append((other, made, conn.last_insert_rowid()))
        conn.execute("COMMIT")
        for other, made, rowid in done:
            os.pwrite(box, _HEADER.pack(made, made, rowid), other * _SLOT)
        carried += len(done)

    latencies = []
    start.wait()
    end = time.monotonic() + duration
    while time.monotonic() < end:
        began = time.perf_counter()
        _spin(outside)
        if mode == "busy":  # SQLite's busy handler does the waiting
            if marker or inside:
                conn.execute("BEGIN IMMEDIATE")
                _spin(inside)
                insert(index, n)
                conn.execute("COMMIT")
            else:
                insert(index, n)
        else:
            try:
                fcntl.fcntl(lock, setlk, exclusive)
                free = True
            except OSError:
                free = False
            if free:
                hold((index, n))
            else:
                if mode == "combine":
                    requests += 1
                    os.pwrite(
                        box,
                        _HEADER.pack(requests, requests - 1, 0) + _REQUEST.pack(index, n),
                        index * _SLOT,
                    )
                fcntl.fcntl(lock, setlkw, exclusive)
                if mode == "combine":
                    _, finished, _ = _HEADER.unpack(os.pread(box, _HEADER.size, index * _SLOT))
                    if finished < requests:  # nobody carried it: withdraw and commit it now
                        os.pwrite(box, _HEADER.pack(requests, requests, 0), index * _SLOT)
                        hold((index, n))
                else:
                    hold((index, n))
            fcntl.fcntl(lock, setlk, unlock)
        latencies.append(time.perf_counter() - began)
        n += 1
    conn.close()
    latencies.sort()
    out.put((n, carried, holds, latencies[int(0.99 * len(latencies))] if latencies else 0.0))


def run(
    mode: str, writers: int, duration: float, marker: bool, inside: float = 0, outside: float = 0
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "handoff.db")
        wal_database(
            path,
            "CREATE TABLE events(id INTEGER PRIMARY KEY, writer INT, seq INT)",
            "CREATE TABLE markers(id INTEGER PRIMARY KEY, at)",
        )
        with open(path + "-handoff-box", "wb") as f:
            f.write(bytes(_SLOT * writers))
        results = run_together(
            _writer,
            [(mode, path, writers, i, duration, marker, inside, outside) for i in range(writers)],
            timeout=duration + 60,
        )
        check = sqlite3.connect(path)
        (rows,) = check.execute("SELECT count(*) FROM events").fetchone()
        check.close()
    commits = sum(r[0] for r in results)
    holds = sum(r[2] for r in results)
    return {
        "per_s": commits / duration,
        "rows_ok": rows == commits,
        "carried": sum(r[1] for r in results) / max(commits, 1),
        "batch": commits / holds if holds else 1.0,
        "fewest": min(r[0] for r in results),
        "most": max(r[0] for r in results),
        "p99_ms": 1000 * max(r[3] for r in results),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--marker", action="store_true", help="also insert a commit-marker row")
    ap.add_argument("--inside-us", type=float, default=0, help="CPU work inside each hold")
    ap.add_argument("--outside-us", type=float, default=0, help="CPU work between holds")
    args = ap.parse_args()
    print(
        "| mode | marker | inside/outside us | commits/s | carried by another | rows per commit "
        "| fewest/most | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for mode in ("busy", "fair", "combine"):
        r = run(mode, args.writers, args.duration, args.marker, args.inside_us, args.outside_us)
        ok &= bool(r["rows_ok"])
        batch = f"{r['batch']:.2f}" if mode != "busy" else "1"
        print(
            f"| {mode} | {'yes' if args.marker else 'no'} | {args.inside_us:g}/{args.outside_us:g} "
            f"| {r['per_s']:,.0f} | {100 * r['carried']:.1f}% | {batch} "
            f"| {r['fewest']:,} / {r['most']:,} | {r['p99_ms']:.1f} |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
