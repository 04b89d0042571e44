"""Lock manager benchmark: acquire+release pairs per second, and wake-up latency.

Measures the lock database and the kernel wake-ups directly, without the SQL engine:

- **pairs/s**: each process (spawned, all started together behind an Event) opens its own
  connection, begins its own row-level transaction and, for ``--duration`` seconds, acquires
  and releases distinct row locks ``row:t:<n>``:
  ``waits.acquire(ldb, txn, [(res, "X")], 5)`` then ``waits.wake(ldb, ldb.release(txn, [res]))``.
  The batched variant acquires 100 row locks in one call (as a row-level statement does) and
  releases them together; it counts 100 pairs per batch.
- **wake-up latency**, release to waiter running: this process holds ``row:t:hot`` X; a
  spawned waiter calls ``waits.acquire`` on it and blocks.  Once the waiter is queued in the
  ``waiters`` table and asleep in the kernel, the holder reads ``time.monotonic()`` and releases
  (release + wake); the waiter reads ``time.monotonic()`` when ``acquire`` returns.
  CLOCK_MONOTONIC is system-wide on Linux, so the two readings compare.

Floors (issue 3): 20k pairs/s from one process, p99 wake-up under 2 ms.

    python benchmarks/locks.py                        # 3 s per throughput cell, 1000 rounds
    python benchmarks/locks.py --duration 1 --rounds 200   # a quick look
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw
from _together import write_report

import sqlite_concurrent
from sqlite_concurrent.cli.bench import environment
from sqlite_concurrent.cli.stress import percentile
from sqlite_concurrent.locking import waits

FLOOR_PAIRS_PER_S = 20_000
FLOOR_P99_WAKE_MS = 2.0
ACQUIRE_TIMEOUT = 5.0
HOT = "row:t:hot"
_POOL = 10_000  # distinct resources per process, reused in turn (each is free again by then)

_SPAWN = multiprocessing.get_context("spawn")


def _csv_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--processes",
        type=_csv_ints,
        default=[1, 4],
        help="comma-separated process counts for pairs/s (default: 1,4)",
    )
    parser.add_argument(
        "--duration", type=float, default=3.0, help="seconds per pairs/s cell (default 3)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="row locks per call, batched variant (default 100)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1000, help="wake-up latency rounds (default 1000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="wake-up rounds run first and discarded"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/locks.json"),
        help="where to write the JSON results (default bench-results/locks.json)",
    )
    return parser.parse_args(argv)


def _open(db: str) -> tuple[Any, Any]:
    """Our connection (it registers this process as a holder) and its lock database."""
    conn = sqlite_concurrent.connect(db)
    return conn, conn._lockdb


# -- pairs per second (child processes) -----------------------------------------------------------


def _pairs_worker(
    db: str, index: int, batch: int, duration: float, ready: Any, start: Any, results: Any
) -> None:
    try:
        conn, ldb = _open(db)
        txn, _ = ldb.begin("row")
        names = [f"row:t:{index * 100_000_000 + n}" for n in range(_POOL)]
        if batch == 1:
            units: list[Any] = names
        else:
            units = [
                [(name, "X") for name in names[i : i + batch]]
                for i in range(0, _POOL - batch + 1, batch)
            ]
        acquire, wake, release = waits.acquire, waits.wake, ldb.release
        waited = 0

        def one(k: int) -> int:
            if batch == 1:
                res = units[k % len(units)]
                blocked = acquire(ldb, txn, [(res, "X")], ACQUIRE_TIMEOUT)
                wake(ldb, release(txn, [res]))
            else:
                reqs = units[k % len(units)]
                blocked = acquire(ldb, txn, reqs, ACQUIRE_TIMEOUT)
                wake(ldb, release(txn, [r for r, _ in reqs]))
            return 1 if blocked else 0

        for k in range(50):  # warm the statement cache and the lock database's pages
            one(k)
        ready.put(index)
        start.wait()
        t0 = time.monotonic()
        deadline = t0 + duration
        k = 0
        while True:
            waited += one(k)
            k += 1
            now = time.monotonic()
            if now >= deadline:
                break
        elapsed = now - t0
        left = len(ldb.holds(txn))
        ldb.end(txn)
        conn.close()
        results.put(
            {
                "index": index,
                "calls": k,
                "pairs": k * batch,
                "elapsed_s": elapsed,
                "waited_calls": waited,
                "locks_left": left,
                "error": None,
            }
        )
    except BaseException as e:
        ready.put(index)
        results.put({"index": index, "error": f"{type(e).__name__}: {e}"})


def _pairs_cell(db: str, processes: int, batch: int, duration: float) -> dict[str, Any]:
    ready, results, start = _SPAWN.Queue(), _SPAWN.Queue(), _SPAWN.Event()
    procs = [
        _SPAWN.Process(
            target=_pairs_worker, args=(db, i, batch, duration, ready, start, results), daemon=True
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    start.set()
    done = [results.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [d["error"] for d in done if d.get("error")]
    cell: dict[str, Any] = {
        "processes": processes,
        "batch": batch,
        "duration_s": duration,
        "errors": errors,
    }
    if errors:
        return cell
    rates = [d["pairs"] / d["elapsed_s"] for d in done]
    cell.update(
        total_pairs=sum(d["pairs"] for d in done),
        total_pairs_per_s=sum(d["pairs"] for d in done) / max(d["elapsed_s"] for d in done),
        per_process_pairs_per_s=sorted(rates),
        mean_per_process_pairs_per_s=sum(rates) / len(rates),
        calls_per_s=sum(d["calls"] for d in done) / max(d["elapsed_s"] for d in done),
        waited_calls=sum(d["waited_calls"] for d in done),
        locks_left=sum(d["locks_left"] for d in done),
    )
    return cell


# -- wake-up latency -------------------------------------------------------------------------------


def _waiter_main(db: str, pipe: Any) -> None:
    try:
        conn, ldb = _open(db)
        txn, _ = ldb.begin("row")
        pipe.send(("ready", os.getpid(), txn))
        while True:
            msg = pipe.recv()
            if msg == "stop":
                break
            pipe.send("acquiring")
            blocked = waits.acquire(ldb, txn, [(HOT, "X")], ACQUIRE_TIMEOUT)
            t1 = time.monotonic()
            waits.wake(ldb, ldb.release(txn, [HOT]))
            pipe.send(("granted", t1, bool(blocked)))
        ldb.end(txn)
        conn.close()
        pipe.send(("done", None, None))
    except BaseException as e:
        pipe.send(("error", f"{type(e).__name__}: {e}", None))


def _proc_state(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2 :].split()[0]


def _wake_latency(db: str, rounds: int, warmup: int) -> dict[str, Any]:
    conn, ldb = _open(db)
    txn, _ = ldb.begin("row")
    reader = apsw.Connection(ldb.path, flags=apsw.SQLITE_OPEN_READONLY)
    ours, theirs = _SPAWN.Pipe()
    proc = _SPAWN.Process(target=_waiter_main, args=(db, theirs), daemon=True)
    proc.start()
    tag, waiter_pid, waiter_txn = ours.recv()
    if tag != "ready":
        raise RuntimeError(f"waiter failed to start: {waiter_pid}")
    queued_sql = "SELECT 1 FROM waiters WHERE txn_id=? AND resource=?"
    latencies: list[float] = []
    release_costs: list[float] = []
    not_blocked = not_sleeping = 0
    error = None
    for r in range(warmup + rounds):
        waits.acquire(ldb, txn, [(HOT, "X")], ACQUIRE_TIMEOUT)
        ours.send("go")
        msg = ours.recv()
        if msg != "acquiring":
            error = msg[1]
            break
        # Harness only, outside the measured interval: wait until the waiter is queued in the
        # lock database, then until it is asleep in the kernel (state S, in poll()).
        while reader.execute(queued_sql, (waiter_txn, HOT)).fetchone() is None:
            time.sleep(0.0001)
        deadline = time.monotonic() + 0.2
        while _proc_state(waiter_pid) != b"S":
            if time.monotonic() > deadline:
                not_sleeping += r >= warmup
                break
            time.sleep(0.0001)
        t0 = time.monotonic()
        waits.wake(ldb, ldb.release(txn, [HOT]))
        t_released = time.monotonic()
        tag, t1, blocked = ours.recv()
        if tag != "granted":
            error = t1
            break
        if r < warmup:
            continue
        not_blocked += not blocked
        latencies.append((t1 - t0) * 1000)
        release_costs.append((t_released - t0) * 1000)
    ours.send("stop")
    if error is None:
        tag, detail, _ = ours.recv()
        if tag == "error":
            error = detail
    proc.join(timeout=30)
    ldb.end(txn)
    reader.close()
    conn.close()
    latencies.sort()
    release_costs.sort()
    return {
        "rounds": len(latencies),
        "warmup_rounds": warmup,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "min_ms": latencies[0] if latencies else 0.0,
        "holder_release_wake_p50_ms": percentile(release_costs, 50),
        "holder_release_wake_p99_ms": percentile(release_costs, 99),
        "rounds_waiter_not_blocked": not_blocked,
        "rounds_waiter_not_seen_sleeping": not_sleeping,
        "error": error,
    }


# -- report ------------------------------------------------------------------------------------


def _markdown(cells: list[dict[str, Any]], wake: dict[str, Any]) -> str:
    header = [
        "measurement",
        "processes",
        "total pairs/s",
        "per process pairs/s (mean; min-max)",
        "floor",
        "met",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cells:
        name = (
            "acquire+release, 1 lock/call"
            if c["batch"] == 1
            else (f"acquire+release, {c['batch']} locks/call")
        )
        if c["errors"]:
            lines.append(f"| {name} | {c['processes']} | ERROR: {c['errors'][0]} | | | |")
            continue
        rates = c["per_process_pairs_per_s"]
        floor = c["batch"] == 1 and c["processes"] == 1
        row = [
            name,
            str(c["processes"]),
            f"{c['total_pairs_per_s']:,.0f}",
            f"{c['mean_per_process_pairs_per_s']:,.0f}; {rates[0]:,.0f}-{rates[-1]:,.0f}",
            f">= {FLOOR_PAIRS_PER_S:,}" if floor else "",
            ("yes" if c["total_pairs_per_s"] >= FLOOR_PAIRS_PER_S else "**no**") if floor else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| wake-up latency (release to waiter running) | rounds | p50 ms | p90 ms | p99 ms "
        "| max ms | holder release+wake p50/p99 ms | floor | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if wake.get("error"):
        lines.append(f"| ERROR: {wake['error']} | {wake['rounds']} | | | | | | | |")
    met = "yes" if wake["p99_ms"] < FLOOR_P99_WAKE_MS else "**no**"
    lines.append(
        f"| 1 holder, 1 waiter on {HOT} | {wake['rounds']} | {wake['p50_ms']:.3f} | "
        f"{wake['p90_ms']:.3f} | {wake['p99_ms']:.3f} | {wake['max_ms']:.3f} | "
        f"{wake['holder_release_wake_p50_ms']:.3f} / {wake['holder_release_wake_p99_ms']:.3f} | "
        f"p99 < {FLOOR_P99_WAKE_MS:g} | {met} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sqlite-concurrent-locks-") as tmp:
        for batch in (1, args.batch):
            for n in args.processes:
                db = os.path.join(tmp, f"pairs-{batch}-{n}.db")
                _open(db)[0].close()  # create the database and its lock database
                cell = _pairs_cell(db, n, batch, args.duration)
                cells.append(cell)
                if cell["errors"]:
                    print(f"pairs x{n} batch {batch}: {cell['errors']}", file=sys.stderr)
                else:
                    print(
                        f"pairs: {n} process(es), {batch:>3} locks/call: "
                        f"{cell['total_pairs_per_s']:9,.0f} pairs/s",
                        file=sys.stderr,
                        flush=True,
                    )
        db = os.path.join(tmp, "wake.db")
        _open(db)[0].close()
        wake = _wake_latency(db, args.rounds, args.warmup)
        print(
            f"wake-up: p50 {wake['p50_ms']:.3f} ms  p99 {wake['p99_ms']:.3f} ms  "
            f"max {wake['max_ms']:.3f} ms",
            file=sys.stderr,
            flush=True,
        )
    print(_markdown(cells, wake))
    one = next((c for c in cells if c["batch"] == 1 and c["processes"] == 1), None)
    floors = {
        "pairs_per_s_1_process": {
            "floor": FLOOR_PAIRS_PER_S,
            "measured": one and one.get("total_pairs_per_s"),
            "met": bool(one and one.get("total_pairs_per_s", 0) >= FLOOR_PAIRS_PER_S),
        },
        "wake_p99_ms": {
            "floor": FLOOR_P99_WAKE_MS,
            "measured": wake["p99_ms"],
            "met": wake["p99_ms"] < FLOOR_P99_WAKE_MS and not wake["error"],
        },
    }
    report = {
        "benchmark": "locks",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {
            "processes": args.processes,
            "duration_s": args.duration,
            "batch": args.batch,
            "rounds": args.rounds,
            "warmup_rounds": args.warmup,
            "acquire_timeout_s": ACQUIRE_TIMEOUT,
        },
        "environment": environment(loadavg_before=load_before, loadavg_after=os.getloadavg()),
        "pairs": cells,
        "wake_latency": wake,
        "floors": floors,
    }
    write_report(args.json, report)
    bad = [c for c in cells if c["errors"]] or wake["error"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
