"""Each lock level keeps its promise to concurrent processes, checked from what they saw.

Processes run random transactions that read and append to a few shared lists, each its own
way (``with conn``, explicit BEGIN, autocommit statements; direct, optimistic or chosen), and
record what every transaction read and whether it committed.  :mod:`histories` then checks the
whole history: nothing acknowledged lost or applied twice, nothing failed visible, and no
cycle of dependencies the level forbids (serializable at page and table level, snapshot
isolation at row level, each also in real time).
"""

from __future__ import annotations

import multiprocessing.connection
import os
import random
import signal

import histories
import pytest
from conftest import SPAWN, lock_rows, run_workers, stock_apsw
from history_workers import (
    INSERTED,
    KEYS,
    SCHEMA,
    TABLES,
    append_lists,
    append_lists_logged,
    read,
    read_log,
)

import sqlite_concurrent

# (mode, style, think) of each process: every way a transaction runs, side by side.
PROCESSES = [
    ("auto", "with", 0),
    ("auto", "begin", 0.001),
    ("optimistic", "with", 0.001),
    ("direct", "begin", 0),
    ("auto", "autocommit", 0),
    ("optimistic", "begin", 0),
    ("auto", "transact", 0.002),
    ("direct", "many", 0),
    ("optimistic+group", "savepoint", 0),
    # A schema change halfway through a transaction, which goes on from the latest database.
    ("auto", "ddl-within", 0),
    ("optimistic", "ddl-within", 0),
]
# A writer through the stdlib's sqlite3, which bypasses our locks: row and page levels find
# its commits at merge; the table level promises nothing against it (its locks are ours).
STOCK = ("stock", "stock", 0)
TRANSACTIONS = 150  # per process


def _create(tmp_path) -> str:
    """The lists' database, every key of ``lists`` there from the start.  Through APSW's own
    SQLite: this process may open it with ours later (two SQLite libraries in one process
    drop each other's locks)."""
    path = str(tmp_path / "app.db")
    setup = stock_apsw(path)
    setup.execute(SCHEMA).fetchall()  # run to the end: the first statement returns a row
    setup.executemany("INSERT INTO lists(k) VALUES (?)", [(k,) for k in range(KEYS)])
    setup.close()
    return path


def _final(path: str) -> dict[tuple, list[int]]:
    conn = stock_apsw(path)
    try:
        return {(table, key): read(conn, table, key) for table in TABLES for key in range(KEYS)}
    finally:
        conn.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "level, seed",
    # More seeds at the table level: its promise rests on the most machinery (table locks,
    # and no direct writer while a table-level transaction is live).
    [("row", 1), ("row", 2), ("page", 1), ("page", 2)] + [("table", s) for s in range(1, 5)],
)
def test_concurrent_histories_keep_the_level_promise(tmp_path, level, seed):
    path = _create(tmp_path)
    processes = PROCESSES + ([] if level == "table" else [STOCK])
    results = run_workers(
        append_lists,
        [
            (path, me, TRANSACTIONS, seed * 100 + me, mode, level, style, think)
            for me, (mode, style, think) in enumerate(processes)
        ],
        timeout=240,
    )
    for result in results:
        assert isinstance(result, tuple), result
    results = [history for _, history in sorted(results)]
    final = _final(path)
    problems = histories.check(results, final, level, inserted=INSERTED)
    assert not problems, "\n".join(problems[:20])
    # The history must have been worth checking: transactions met and most committed.
    committed = sum(outcome == "ok" for history in results for _, outcome, _, _ in history)
    assert committed > len(processes) * TRANSACTIONS // 2
    assert sum(len(values) for values in final.values()) > 100


# The checker itself, on histories made by hand: each anomaly it must find.
def _h(*txns):
    """One process's history: ``(ops, outcome)`` pairs, one time unit apart, each
    overlapping the next unless it has ``"after"`` last."""
    history, now = [], 0.0
    for txn in txns:
        ops, outcome = txn[0], txn[1]
        began = now + 10 if len(txn) > 2 else now
        history.append((ops, outcome, began, began + 5))
        now = began + 1
    return history


@pytest.mark.parametrize(
    "level, processes, final, expected",
    [
        # Two read-modify-appends of one list, each blind to the other: a lost update.
        (
            "row",
            [
                _h(([("r", "lists", 0, []), ("a", "lists", 0, 1)], "ok")),
                _h(([("r", "lists", 0, []), ("a", "lists", 0, 2)], "ok")),
            ],
            {("lists", 0): [1, 2]},
            "G-single",
        ),
        # Write skew: each read the other's list empty and appended to its own.
        (
            "page",
            [
                _h(([("r", "lists", 0, []), ("a", "lists", 1, 1)], "ok")),
                _h(([("r", "lists", 1, []), ("a", "lists", 0, 2)], "ok")),
            ],
            {("lists", 0): [2], ("lists", 1): [1]},
            "a cycle at page level",
        ),
        # A transaction that began after another was acknowledged, yet did not see it.
        (
            "row",
            [_h(([("a", "lists", 0, 1)], "ok"), ([("r", "lists", 0, [])], "ok", "after"))],
            {("lists", 0): [1]},
            "G-single",
        ),
        ("row", [_h(([("a", "lists", 0, 1)], "ok"))], {("lists", 0): []}, "is lost"),
        ("row", [_h(([("a", "lists", 0, 1)], "conflict"))], {("lists", 0): [1]}, "failed"),
        ("row", [_h(([("a", "lists", 0, 1)], "ok"))], {("lists", 0): [1, 1]}, "2 times"),
        (
            "row",
            [_h(([("a", "lists", 0, 1), ("a", "lists", 1, 2)], "unknown"))],
            {("lists", 0): [1], ("lists", 1): []},
            "committed in part",
        ),
        ("row", [_h(([("r", "lists", 0, [3])], "ok"))], {("lists", 0): []}, "not a prefix"),
        (
            "row",
            [_h(([("a", "lists", 0, 1), ("r", "lists", 0, [])], "ok"))],
            {("lists", 0): [1]},
            "misses its own",
        ),
    ],
)
def test_the_checker_finds_each_anomaly(level, processes, final, expected):
    problems = histories.check(processes, final, level)
    assert any(expected in p for p in problems), problems
    # ... and the write skew is what row level allows.
    if expected == "a cycle at page level":
        assert histories.check(processes, final, "row") == []


# Killed writers: (mode, style, think) of the writers, each replaced by a fresh one when killed.
KILLED = [
    ("auto", "with", 0),
    ("auto", "begin", 0.001),
    ("optimistic+group", "savepoint", 0),
    ("direct", "many", 0),
    ("auto", "autocommit", 0),
    ("optimistic", "transact", 0),
    ("auto", "ddl", 0),
    ("auto", "ddl-within", 0),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("level", ["row", "page", "table"])
def test_writers_killed_at_random_lose_nothing_acknowledged_and_commit_nothing_in_part(
    tmp_path, level
):
    """SIGKILL writers at random moments of their transactions (after a random number of them
    began), start others in their place, and check the whole history: acknowledged commits
    all there, once; a killed transaction's appends all there or none; the level's promise
    kept; and once every writer is done, no lock or transaction left behind."""
    _run_killed(tmp_path, level, seed=0)


def _run_killed(tmp_path, level: str, seed: int) -> None:
    path = _create(tmp_path)
    r = random.Random(f"{level}{seed}")
    kills_left = 12
    running = {}  # progress reader -> [process, transactions begun, when to kill (or None)]
    logs = []

    def start_writer():
        me = len(logs)
        mode, style, think = KILLED[me % len(KILLED)]
        logs.append(str(tmp_path / f"log{me}"))
        reader, writer = SPAWN.Pipe(duplex=False)
        proc = SPAWN.Process(
            target=append_lists_logged,
            args=(path, me, 60, seed * 1000 + me, mode, level, style, think, logs[-1], writer),
        )
        proc.start()
        writer.close()
        running[reader] = [proc, 0, r.randint(1, 40) if kills_left else None]

    for _ in KILLED:
        start_writer()
    while running:
        ready = multiprocessing.connection.wait(list(running), timeout=120)
        assert ready, "no writer made progress in 120 s"
        for reader in ready:
            entry = running[reader]
            try:
                reader.recv_bytes()
            except EOFError:  # done
                entry[0].join(60)
                assert entry[0].exitcode == 0, f"a writer exited with {entry[0].exitcode}"
                del running[reader]
                continue
            entry[1] += 1
            if entry[2] is not None and entry[1] >= entry[2] and kills_left:
                os.kill(entry[0].pid, signal.SIGKILL)
                entry[0].join(60)
                del running[reader]
                kills_left -= 1
                start_writer()
    assert kills_left == 0

    # Whatever the killed ones held was let go: one more transaction commits at once.
    conn = sqlite_concurrent.connect(path, lock_level=level)
    with conn:
        conn.execute("UPDATE lists SET v = v WHERE k = 0")
    conn.close()
    assert lock_rows(path, "SELECT count(*) FROM locks")[0][0] == 0
    assert lock_rows(path, "SELECT count(*) FROM transactions")[0][0] == 0
    histories_ = [read_log(log) for log in logs]
    problems = histories.check(histories_, _final(path), level, inserted=INSERTED)
    assert not problems, "\n".join(problems[:20])
    killed = [h for h in histories_ if h and h[-1][1] == "unknown"]
    assert len(killed) >= 6, "the kills should land inside transactions"


def test_the_order_of_inserted_rows_binds_only_serializable_levels():
    """One transaction read a list before another appended to it, and inserted a row after
    that one's successor inserted its own: a cycle, but through rows that no two of them both
    wrote, so snapshot isolation allows it."""
    processes = [
        _h(([("r", "lists", 0, []), ("a", "items", 0, 1)], "ok")),
        _h(([("a", "lists", 0, 2)], "ok"), ([("a", "items", 0, 3)], "ok", "after")),
    ]
    final = {("lists", 0): [2], ("items", 0): [3, 1]}
    assert histories.check(processes, final, "row", inserted=["items"]) == []
    assert histories.check(processes, final, "page", inserted=["items"])
    assert histories.check(processes, final, "row")  # as one row, the order is a dependency
