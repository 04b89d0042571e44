"""How much Python one direct transaction runs, counted rather than timed.

    python benchmarks/python_work.py                  # both shapes, 200 transactions each
    python benchmarks/python_work.py --shapes explicit --txns 500

One process runs one-row counter transactions (``UPDATE c SET n = n + 1 WHERE id = ?``) on a
fresh database, in one of two shapes:

- explicit:   ``with conn: conn.execute(...)`` (the stdlib's implicit BEGIN, then commit)
- autocommit: ``isolation_level=None``, one ``conn.execute(...)`` per transaction

After a warm-up it counts, per transaction, the bytecode instructions the interpreter ran
(``sys.settrace`` opcode events), the Python functions called and the C functions called, in
all and while the merge lock was held (while this process held any lock of ``oslock``).

Why it exists: on a shared 2-core virtual machine two runs of the same timing benchmark differ
by 10-30%, more than most single changes to the direct path gain.  These counts do not move
between runs, so a change's effect on the Python a transaction runs, and on the part of it that
every other writer waits for, shows exactly; ``contention.py`` then shows what that is worth.
Tracing slows the run, so the merge lock's hold rule (a process whose holds outlast a third of
the spin sleeps at once) turns every acquisition into a kernel wait here: the counts include
that path's few extra instructions, not a spin.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from _together import chosen, wal_database

import sqlite_concurrent
from sqlite_concurrent.locking import oslock

SHAPES = ("explicit", "autocommit")
_UPDATE = "UPDATE c SET n = n + 1 WHERE id = ?"


def _transaction(path: str, shape: str) -> tuple[Any, Callable[[int], None]]:
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    if shape == "autocommit":
        conn.isolation_level = None

        def one(k: int) -> None:
            conn.execute(_UPDATE, (k % 2 + 1,))

    else:

        def one(k: int) -> None:
            with conn:
                conn.execute(_UPDATE, (k % 2 + 1,))

    return conn, one


def count(shape: str, txns: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "work.db")
        wal_database(
            path,
            "CREATE TABLE c(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
            "INSERT INTO c VALUES (1, 0), (2, 0)",
        )
        conn, one = _transaction(path, shape)
        for k in range(300):  # shapes learnt, statements cached
            one(k)
        counts = dict.fromkeys(("ops", "ops_locked", "calls", "calls_locked", "c_calls"), 0)
        held = oslock._holders

        def opcodes(frame: Any, event: str, _arg: Any) -> Any:
            frame.f_trace_opcodes = True
            if event == "opcode":
                counts["ops"] += 1
                if held:
                    counts["ops_locked"] += 1
            return opcodes

        def calls(_frame: Any, event: str, _arg: Any) -> None:
            if event == "call":
                counts["calls"] += 1
                if held:
                    counts["calls_locked"] += 1
            elif event == "c_call":
                counts["c_calls"] += 1

        sys.settrace(opcodes)
        sys.setprofile(calls)
        try:
            for k in range(txns):
                one(k)
        finally:
            sys.settrace(None)
            sys.setprofile(None)
        conn.close()
    return {name: n / txns for name, n in counts.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {SHAPES}")
    ap.add_argument("--txns", type=int, default=200)
    args = ap.parse_args()
    shapes = chosen(ap, args.shapes, SHAPES, "shapes")
    print("| shape | bytecodes | under the merge lock | Python calls | under the lock | C calls |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in shapes:
        c = count(shape, args.txns)
        print(
            f"| {shape} | {c['ops']:,.0f} | {c['ops_locked']:,.0f} | {c['calls']:.0f} "
            f"| {c['calls_locked']:.0f} | {c['c_calls']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
