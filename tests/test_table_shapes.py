"""Every table shape SQLite has: the same writes through the stdlib and through us give the
same rows, the same rowids and the same errors, in one process and with four writing."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import SPAWN
from table_shapes import (
    SCRIPT,
    SHAPES,
    WITHOUT_ROWIDS,
    concurrent_writer,
    contents,
    create,
    key_base,
    open_conn,
    rowid_of,
    run_script,
    worker_script,
)

import sqlite_concurrent

ENGINES = {"stdlib": sqlite3, "ours": sqlite_concurrent}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_one_process_matches_the_stdlib(tmp_path, shape):
    seen, rows = {}, {}
    for name, module in ENGINES.items():
        path = str(tmp_path / f"{name}.db")
        create(module, path, shape)
        conn = open_conn(module, path, shape)
        seen[name] = run_script(conn, SCRIPT)
        conn.close()
        rows[name] = contents(path, shape)
    assert seen["ours"] == seen["stdlib"]
    assert rows["ours"] == rows["stdlib"]


WRITERS = 4


def _run_concurrently(path: str, engine: str, shape: str) -> dict[int, list]:
    start, queue = SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=concurrent_writer, args=(start, queue, engine, path, shape, w))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.set()
    results = dict(queue.get(timeout=100) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, results
    return results


def _without_rowids(seen: list) -> list:
    """Observations with lastrowid masked: with several writers it depends on who went first."""
    return [("done", "?", s[2]) if s[0] == "done" else s for s in seen]


def _auto_key_masked(row: tuple) -> tuple:
    """Writers' own keys are negative; an automatically assigned one is positive, and which
    writer got which depends on the order they went in."""
    a = row[0] if row else None
    return ("auto", *row[1:]) if isinstance(a, int) and a > 0 else row


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_four_processes_match_the_stdlib(tmp_path, shape):
    seen, rows, observed = {}, {}, {}
    for engine, module in ENGINES.items():
        path = str(tmp_path / f"{engine}.db")
        create(module, path, shape, seed=True)
        results = _run_concurrently(path, engine, shape)
        seen[engine] = {w: _without_rowids(s) for w, s in results.items()}
        got = contents(path, shape)
        # Rowids differ with the order writers went in; the rows themselves may not.
        rows[engine] = {
            t: sorted(
                repr(_auto_key_masked(r if t == "t" and shape in WITHOUT_ROWIDS else r[1:]))
                for r in table_rows
            )
            for t, table_rows in got.items()
            if t not in ("integrity", "sqlite_sequence")
        }
        rows[engine]["integrity"] = got["integrity"]
        # The rowid each writer saw for its last insert of key 6 is where that row is.
        at = [s[:2] for s in worker_script(0)].index(
            ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", (key_base(0) + 6, "q0", "six0"))
        )
        if shape not in WITHOUT_ROWIDS:
            observed[engine] = [
                results[w][at][1] == rowid_of(path, key_base(w) + 6)
                if results[w][at][0] == "done"
                else results[w][at]
                for w in range(WRITERS)
            ]
    for w in range(WRITERS):
        differ = [
            (i, mine, theirs)
            for i, (mine, theirs) in enumerate(zip(seen["ours"][w], seen["stdlib"][w], strict=True))
            if mine != theirs
        ]
        assert not differ, f"writer {w}: (step, ours, stdlib) {differ}"
    assert rows["ours"] == rows["stdlib"]
    assert observed.get("ours") == observed.get("stdlib")
