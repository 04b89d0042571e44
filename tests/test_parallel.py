"""Write transactions from many processes run at the same time and all commit."""

from __future__ import annotations

import pytest
from conftest import SPAWN, integrity_ok, run_workers, stock_apsw
from workers import disjoint_updates

import sqlite_concurrent

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")

WRITERS = 8
TXNS = 200
ROWS = 20


def _make_table(path: str, rows: int) -> None:
    conn = sqlite_concurrent.connect(path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(rows)])
    conn.commit()
    conn.close()


def _max_concurrency(intervals: list[tuple[float, float, int]]) -> int:
    """Most transactions of distinct processes open at one instant."""
    events = sorted(
        [(t0, 1, w) for t0, _, w in intervals] + [(t1, -1, w) for _, t1, w in intervals]
    )
    open_by_writer: dict[int, int] = {}
    best = 0
    for _, delta, writer in events:
        open_by_writer[writer] = open_by_writer.get(writer, 0) + delta
        best = max(best, sum(1 for n in open_by_writer.values() if n > 0))
    return best


@pytest.mark.timeout(180)
def test_eight_processes_update_disjoint_rows_in_parallel(db_path):
    _make_table(db_path, WRITERS * ROWS)
    results = run_workers(
        disjoint_updates, [(db_path, w, ROWS, TXNS, 0.002) for w in range(WRITERS)], timeout=170
    )
    assert all(r[0] != "error" for r in results), results
    conn = stock_apsw(db_path)
    per_writer = conn.execute(
        "SELECT id / ?, sum(v) FROM t GROUP BY id / ? ORDER BY 1", (ROWS, ROWS)
    ).fetchall()
    assert per_writer == [(w, TXNS) for w in range(WRITERS)]
    assert conn.execute("SELECT sum(v) FROM t").fetchone()[0] == WRITERS * TXNS
    conn.close()
    assert integrity_ok(db_path)
    intervals = [(t0, t1, w) for w, spans in results for t0, t1 in spans]
    # Each interval runs from BEGIN to just before COMMIT, including the 2 ms of work: under a
    # single-writer lock no two of these could ever be open at once.
    assert _max_concurrency(intervals) >= 4
    overlapping = sum(
        1
        for i, (a0, a1, wa) in enumerate(intervals)
        if any(b0 < a1 and a0 < b1 and wb != wa for b0, b1, wb in intervals[i + 1 : i + 200])
    )
    assert overlapping > len(intervals) // 4


def _hold_open_until_other_commits(start, queue, path, ready, other_done):
    conn = sqlite_concurrent.connect(path)
    start.wait()
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = v + 10 WHERE id = 0")
    ready.set()
    assert other_done.wait(30)
    conn.commit()
    conn.close()
    queue.put("committed")


def _commit_while_other_open(start, queue, path, ready, other_done):
    conn = sqlite_concurrent.connect(path)
    start.wait()
    assert ready.wait(30)
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
    conn.commit()
    other_done.set()
    conn.close()
    queue.put("committed")


@pytest.mark.timeout(60)
def test_second_writer_commits_while_first_transaction_is_open(db_path):
    """Deterministic overlap: B's whole transaction runs inside A's, and both commit."""
    _make_table(db_path, 2)
    ready, other_done = SPAWN.Event(), SPAWN.Event()
    # Both children are started together so each can wait on the other's event.
    start, queue = SPAWN.Event(), SPAWN.Queue()
    a = SPAWN.Process(
        target=_hold_open_until_other_commits, args=(start, queue, db_path, ready, other_done)
    )
    b = SPAWN.Process(
        target=_commit_while_other_open, args=(start, queue, db_path, ready, other_done)
    )
    a.start()
    b.start()
    start.set()
    results = [queue.get(timeout=50), queue.get(timeout=50)]
    a.join(10)
    b.join(10)
    assert results == ["committed", "committed"]
    assert (a.exitcode, b.exitcode) == (0, 0)
    conn = stock_apsw(db_path)
    assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(0, 10), (1, 1)]
    conn.close()
