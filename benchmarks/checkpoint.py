"""Checkpoint pause benchmark (issue 7): what new transactions wait while the WAL is restarted.

8 writer processes run overlapping read-then-update transactions on disjoint rows, with work
inside each, under a small ``wal_limit`` so that restart checkpoints happen all the time: each
one closes the snapshot gate, and a ``BEGIN`` that arrives meanwhile waits.  Each writer records
the latency of ``BEGIN`` and of the whole transaction.  The same run with a huge ``wal_limit``
(the gate never closes) is the baseline; the difference is the cost of the pauses.

The parent never opens a database connection while the writers run: it samples the WAL size
with os.stat every few ms and counts the times it shrank (a TRUNCATE checkpoint).

    python benchmarks/checkpoint.py                    # 20 s per run, wal_limit 4 MiB
    python benchmarks/checkpoint.py --duration 5       # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue as queue_mod
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from _together import write_report

import sqlite_concurrent
from sqlite_concurrent.cli.bench import environment
from sqlite_concurrent.cli.stress import percentile

SPAWN = multiprocessing.get_context("spawn")
MIB = 2**20
BASELINE_WAL_LIMIT = 2**50  # the gate never closes
BUCKETS_MS = (1, 5, 10, 50, 100, 500, 1000)


def add_writer_options(
    parser: argparse.ArgumentParser, *, duration: float, wal_limit_mib: float
) -> None:
    """The options of the writers this benchmark and ``soak_wal.py`` both run."""
    parser.add_argument(
        "--duration", type=float, default=duration, help=f"seconds per run (default {duration:g})"
    )
    parser.add_argument("--writers", type=int, default=8, help="writer processes (default 8)")
    parser.add_argument("--rows", type=int, default=50, help="rows per writer (default 50)")
    parser.add_argument(
        "--wal-limit-mib",
        type=float,
        default=wal_limit_mib,
        help=f"wal_limit in MiB (default {wal_limit_mib:g})",
    )
    parser.add_argument(
        "--checkpoint-wait", type=float, default=2.0, help="checkpoint_wait in s (default 2)"
    )
    parser.add_argument(
        "--think-ms", type=float, default=2.0, help="work inside each transaction (default 2 ms)"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_writer_options(parser, duration=20.0, wal_limit_mib=4.0)
    parser.add_argument(
        "--stat-every-ms", type=float, default=2.0, help="WAL size sampling period (default 2 ms)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/checkpoint.json"),
        help="where to write the JSON results (default bench-results/checkpoint.json)",
    )
    return parser.parse_args(argv)


def _instrument(cp) -> list[tuple[str, float]]:
    """Time each restart attempt of this process's checkpointer (benchmark-side only).

    An attempt is "ok" (the WAL was truncated), "gave_up" (readers held the WAL for the whole
    wait), "collision" (another checkpoint was running: BUSY at once) or "skipped" (another
    process held the gate, so this one did nothing).
    """
    attempts: list[tuple[str, float]] = []
    original = cp._restart

    def timed(*args: object) -> None:
        before = (cp.restarts, cp.failed_restarts, cp.collisions)
        t0 = time.monotonic()
        original(*args)
        dt = time.monotonic() - t0
        if cp.restarts != before[0]:
            attempts.append(("ok", dt))
        elif cp.failed_restarts != before[1]:
            attempts.append(("gave_up", dt))
        elif cp.collisions != before[2]:
            attempts.append(("collision", dt))
        else:
            attempts.append(("skipped", dt))

    cp._restart = timed
    return attempts


def writer_proc(start, results, path, writer, rows, duration, think, wal_limit, checkpoint_wait):
    """Overlapping read-then-update transactions on this writer's own rows for ``duration`` s."""
    try:
        conn = sqlite_concurrent.connect(path, wal_limit=wal_limit, checkpoint_wait=checkpoint_wait)
        conn.execute("PRAGMA synchronous=NORMAL")
        # Open the connection's private connections before the clock starts.
        conn.execute("BEGIN")
        conn.execute("SELECT v FROM t WHERE id=?", (writer * rows,)).fetchone()
        conn.rollback()
        attempts = _instrument(conn._checkpointer)
        counts = [0] * rows
        errors: dict[str, int] = {}
        begins: list[float] = []
        txns: list[float] = []
        start.wait()
        end = time.monotonic() + duration
        i = 0
        while time.monotonic() < end:
            row_id = writer * rows + i % rows
            try:
                t0 = time.monotonic()
                conn.execute("BEGIN")
                t1 = time.monotonic()
                (value,) = conn.execute("SELECT v FROM t WHERE id=?", (row_id,)).fetchone()
                time.sleep(think)
                conn.execute("UPDATE t SET v=? WHERE id=?", (value + 1, row_id))
                conn.commit()
                t2 = time.monotonic()
                counts[i % rows] += 1
                begins.append(t1 - t0)
                txns.append(t2 - t0)
            except sqlite_concurrent.Error as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                conn.rollback()
            i += 1
        cp = conn._checkpointer
        restarts, failed = cp.restarts, cp.failed_restarts
        conn.close()
        results.put(
            {
                "writer": writer,
                "counts": counts,
                "errors": errors,
                "restarts": restarts,
                "failed_restarts": failed,
                "attempts": attempts,
                "begins": begins,
                "txns": txns,
            }
        )
    except BaseException:
        results.put({"writer": writer, "error": traceback.format_exc()})
        raise


def wal_size(path: str) -> int:
    try:
        return os.stat(path + "-wal").st_size
    except FileNotFoundError:
        return 0


def setup(path: str, writers: int, rows: int) -> None:
    """The table the writers update: ``rows`` rows of their own each."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad TEXT)")
    conn.executemany(
        "INSERT INTO t VALUES (?, 0, ?)", [(i, "x" * 200) for i in range(writers * rows)]
    )
    conn.commit()
    conn.close()


def _stats_ms(values: list[float]) -> dict:
    v = sorted(values)
    out = {
        "n": len(v),
        "p50_ms": 1000 * percentile(v, 50),
        "p99_ms": 1000 * percentile(v, 99),
        "p999_ms": 1000 * percentile(v, 99.9),
        "max_ms": 1000 * (v[-1] if v else 0.0),
        "mean_ms": 1000 * (sum(v) / len(v) if v else 0.0),
    }
    out["at_least_ms"] = {str(b): sum(1 for x in v if x * 1000 >= b) for b in BUCKETS_MS}
    return out


def start_writers(
    args: argparse.Namespace, path: str, wal_limit: int
) -> tuple[Any, Any, list[Any]]:
    """Spawn the writers, waiting on the returned event; also returns their results queue and
    the processes."""
    start, results_q = SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=writer_proc,
            args=(
                start,
                results_q,
                path,
                w,
                args.rows,
                args.duration,
                args.think_ms / 1000,
                wal_limit,
                args.checkpoint_wait,
            ),
        )
        for w in range(args.writers)
    ]
    for p in procs:
        p.start()
    return start, results_q, procs


def run(args: argparse.Namespace, path: str, wal_limit: int) -> dict:
    setup(path, args.writers, args.rows)
    start, results_q, procs = start_writers(args, path, wal_limit)
    time.sleep(1.0)  # let the children connect and warm up before the clock starts
    start.set()
    t_start = time.monotonic()
    results: list[dict] = []
    problems: list[str] = []
    prev_size, drops, max_size, samples = 0, 0, 0, 0
    deadline = t_start + args.duration + 120
    period = args.stat_every_ms / 1000
    while len(results) < len(procs):
        if time.monotonic() > deadline:
            problems.append("writers did not report within duration + 120 s")
            break
        size = wal_size(path)
        samples += 1
        if size < prev_size:
            drops += 1
        prev_size = size
        max_size = max(max_size, size)
        with contextlib.suppress(queue_mod.Empty):
            results.append(results_q.get(timeout=period))
        if not any(p.is_alive() for p in procs) and results_q.empty():
            if len(results) < len(procs):
                problems.append("a writer exited without reporting")
            break
    elapsed = time.monotonic() - t_start
    for p in procs:
        p.join(30)

    crashes = [r["error"] for r in results if "error" in r]
    good = [r for r in results if "error" not in r]
    check = sqlite3.connect(path)
    rows = dict(check.execute("SELECT id, v FROM t").fetchall())
    lost = sum(
        1
        for r in good
        for row, count in enumerate(r["counts"])
        if rows[r["writer"] * args.rows + row] != count
    )
    integrity = check.execute("PRAGMA integrity_check").fetchone()[0]
    check.close()

    commits = sum(sum(r["counts"]) for r in good)
    errors: dict[str, int] = {}
    for r in good:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    attempts: dict[str, list[float]] = {"ok": [], "gave_up": [], "collision": [], "skipped": []}
    for r in good:
        for kind, dt in r["attempts"]:
            attempts[kind].append(dt)
    return {
        "wal_limit_bytes": wal_limit,
        "elapsed_s": elapsed,
        "commits": commits,
        "txn_per_s": commits / args.duration,
        "begin": _stats_ms([x for r in good for x in r["begins"]]),
        "txn": _stats_ms([x for r in good for x in r["txns"]]),
        "restarts": sum(r["restarts"] for r in good),
        "failed_restarts": sum(r["failed_restarts"] for r in good),
        "restart_attempt_ms": {k: _stats_ms(v) for k, v in attempts.items()},
        "wal_size_drops": drops,
        "wal_samples": samples,
        "max_wal_bytes": max_size,
        "errors_by_class": errors,
        "crashes": crashes,
        "problems": problems,
        "lost_rows": lost,
        "integrity": integrity,
    }


def _ok(r: dict) -> bool:
    return not (r["crashes"] or r["problems"] or r["lost_rows"] or r["integrity"] != "ok")


def _markdown(gated: dict, base: dict) -> str:
    def lat(r: dict, key: str, field: str) -> str:
        return f"{r[key][field]:.2f}"

    def diff(key: str, field: str) -> str:
        return f"{gated[key][field] - base[key][field]:+.2f}"

    rows: list[tuple[str, str, str, str]] = [
        (
            "wal_limit",
            f"{gated['wal_limit_bytes'] / MIB:g} MiB",
            "never (2^50 B)",
            "",
        ),
        ("commits", f"{gated['commits']:,}", f"{base['commits']:,}", ""),
        (
            "txn/s",
            f"{gated['txn_per_s']:,.0f}",
            f"{base['txn_per_s']:,.0f}",
            f"{gated['txn_per_s'] / base['txn_per_s'] - 1:+.1%}" if base["txn_per_s"] else "",
        ),
    ]
    for key, name in (("begin", "BEGIN"), ("txn", "txn")):
        for field, label in (
            ("p50_ms", "p50"),
            ("p99_ms", "p99"),
            ("p999_ms", "p99.9"),
            ("max_ms", "max"),
        ):
            rows.append(
                (
                    f"{name} {label} ms",
                    lat(gated, key, field),
                    lat(base, key, field),
                    diff(key, field),
                )
            )
    for b in (10, 100):
        rows.append(
            (
                f"BEGINs >= {b} ms",
                f"{gated['begin']['at_least_ms'][str(b)]:,}",
                f"{base['begin']['at_least_ms'][str(b)]:,}",
                "",
            )
        )
    ok_attempts = gated["restart_attempt_ms"]["ok"]
    gave_up = gated["restart_attempt_ms"]["gave_up"]
    rows += [
        (
            "restart checkpoints (WAL shrank / writers' count)",
            f"{gated['wal_size_drops']} / {gated['restarts']}",
            f"{base['wal_size_drops']} / {base['restarts']}",
            "",
        ),
        (
            "restarts that collided with another checkpoint (retried)",
            f"{gated['restart_attempt_ms']['collision']['n']}",
            f"{base['restart_attempt_ms']['collision']['n']}",
            "",
        ),
        (
            "failed restarts (gave up)",
            f"{gated['failed_restarts']}",
            f"{base['failed_restarts']}",
            "",
        ),
        (
            "gate closed per restart p50/max ms",
            f"{ok_attempts['p50_ms']:.1f} / {ok_attempts['max_ms']:.1f}",
            "-",
            "",
        ),
        (
            "gate closed per failed restart p50/max ms",
            f"{gave_up['p50_ms']:.1f} / {gave_up['max_ms']:.1f}" if gave_up["n"] else "-",
            "-",
            "",
        ),
        (
            "max WAL MB",
            f"{gated['max_wal_bytes'] / 1e6:.1f}",
            f"{base['max_wal_bytes'] / 1e6:.1f}",
            "",
        ),
        (
            "errors / lost rows / integrity",
            f"{gated['errors_by_class'] or 'none'} / {gated['lost_rows']} / {gated['integrity']}",
            f"{base['errors_by_class'] or 'none'} / {base['lost_rows']} / {base['integrity']}",
            "",
        ),
    ]
    lines = [
        "| metric | gated (small wal_limit) | baseline (gate never closes) | difference |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.time()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="sqlite-concurrent-ckpt-") as tmp:
        for name, limit in (
            ("gated", int(args.wal_limit_mib * MIB)),
            ("baseline", BASELINE_WAL_LIMIT),
        ):
            r = run(args, os.path.join(tmp, f"{name}.db"), limit)
            print(
                f"{name:>8}: {r['txn_per_s']:7,.0f} txn/s  BEGIN p99 {r['begin']['p99_ms']:6.2f} ms"
                f"  max {r['begin']['max_ms']:7.1f} ms  restarts {r['restarts']}"
                f"  max WAL {r['max_wal_bytes'] / 1e6:.1f} MB  {'ok' if _ok(r) else 'FAILED'}",
                file=sys.stderr,
                flush=True,
            )
            runs[name] = r
            for f in Path(tmp).glob(f"{name}.db*"):
                f.unlink()
    print(_markdown(runs["gated"], runs["baseline"]))
    report = {
        "benchmark": "checkpoint",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {
            "duration_s": args.duration,
            "writers": args.writers,
            "rows_per_writer": args.rows,
            "wal_limit_bytes": int(args.wal_limit_mib * MIB),
            "baseline_wal_limit_bytes": BASELINE_WAL_LIMIT,
            "checkpoint_wait_s": args.checkpoint_wait,
            "think_ms": args.think_ms,
            "stat_every_ms": args.stat_every_ms,
            "workload": "BEGIN; SELECT own row; sleep think; UPDATE own row; COMMIT "
            "(synchronous=NORMAL)",
        },
        "environment": environment(note="2-core machine shared with other work; timings are noisy"),
        "runs": runs,
    }
    write_report(args.json, report)
    failed = [name for name, r in runs.items() if not _ok(r)]
    for name in failed:
        r = runs[name]
        print(
            f"check failed ({name}): problems={r['problems']} lost={r['lost_rows']} "
            f"integrity={r['integrity']} crashes={r['crashes']}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
