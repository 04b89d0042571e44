"""The per-process journal: its format, and what recovery does with a dead process's journal
(deletes it when intact, quarantines it when it cannot be trusted, never applies it)."""

from __future__ import annotations

import json
import os
import struct
import zlib

import pytest
from conftest import SPAWN, integrity_ok, lock_rows, wait_until
from typer.testing import CliRunner
from workers import exit_now

import sqlite_concurrent
from sqlite_concurrent.cli.app import app
from sqlite_concurrent.commit import merge
from sqlite_concurrent.engine import recovery
from sqlite_concurrent.storage import journal, snapshot

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("optimistic")]


def _dead_pid() -> int:
    proc = SPAWN.Process(target=exit_now)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    return proc.pid


@pytest.fixture
def db(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    conn.execute("INSERT INTO t VALUES (1, 'one')")
    conn.commit()
    conn.close()
    return db_path


def _pending(txn_id: int = 7) -> merge.Pending:
    header = snapshot.WalHeader(b"\x01" * 48, 3, 4096, 12, 9, (5, 6), 2)
    return merge.Pending(
        txn_id=txn_id,
        changeset=b"\x00changeset\xff",
        schema_version=4,
        images=[merge.RowImages("t", "SELECT ...", _keys((1,), (2, "b")), bytes(range(32)))],
        foreign_keys=True,
        sequences=[("t", 2**40)],
        pages=merge.PageCheck("/x/app.db", frozenset({3, 1, 2}), header),
        rebase={"t": frozenset({10, 11})},
    )


def _keys(*keys) -> bytes:
    out = bytearray()
    for key in keys:
        journal.put_value(out, key)
    return bytes(out)


def test_pending_round_trips_through_the_codec():
    p = _pending()
    assert merge.decode_pending(merge.encode_pending(p)) == p
    q = merge.Pending(7, b"", 1, [], False, [])
    assert merge.decode_pending(merge.encode_pending(q)) == q
    assert list(p.images[0]) == [((1,), bytes(range(16))), ((2, "b"), bytes(range(16, 32)))]


@pytest.mark.parametrize("garbage", [b"", b"Z", b"T\xff\xff\xff\xff", b"L\x02\x00\x00\x00N"])
def test_codec_refuses_garbage(garbage):
    with pytest.raises((ValueError, struct.error)):
        journal.decode(garbage)


def _write_journal(db_path: str, pid: int, txn_ids=(7,)) -> str:
    path = journal.path_for(db_path, pid)
    data = journal._header(db_path, pid, 0)
    for t in txn_ids:
        data += journal._record(journal.READY, t, merge.encode_pending(_pending(t)))
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_records_are_read_back_and_checked(db):
    j = journal.Journal(db, 0)
    offset, length = j.write_ready(7, b"payload")
    assert journal.read_record(j.path, offset, length, 7) == b"payload"
    with pytest.raises(journal.JournalError):
        journal.read_record(j.path, offset, length, 8)  # another transaction's record
    with open(j.path, "r+b") as f:
        f.seek(offset + 15)
        f.write(b"X")
    with pytest.raises(journal.JournalError, match="corrupt"):
        journal.read_record(j.path, offset, length, 7)
    j.done(7)
    assert os.path.getsize(j.path) == journal.HEADER_SIZE  # nothing waits: back to the header
    j.users = 1
    j.release()
    assert not os.path.exists(j.path)


def _corrupt_header(data: bytes) -> bytes:
    return data[:20] + b"\xff" + data[21:]


def _future(data: bytes, db_path: str) -> bytes:
    head = bytearray(data[: journal.HEADER_SIZE])
    struct.pack_into("<H", head, 8, journal.VERSION + 1)
    struct.pack_into("<I", head, journal.HEADER_SIZE - 4, zlib.crc32(head[:-4]))
    return bytes(head) + data[journal.HEADER_SIZE :]


BAD = {
    "corrupt header": (lambda d, p: _corrupt_header(d), "corrupt"),
    "corrupt record": (lambda d, p: d[:-3] + b"\x00\x00\x00", "corrupt"),
    "truncated record": (lambda d, p: d[:-10], "truncated"),
    "truncated header": (lambda d, p: d[:30], "truncated"),
    "foreign file": (lambda d, p: b"hello, not a journal" * 10, "foreign"),
    "another database": (lambda d, p: journal._header(p + "x", 1, 0) + d[64:], "foreign"),
    "future version": (_future, "future-version"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_untrustworthy_journal_of_a_dead_process_is_quarantined_not_applied(db, case):
    damage, reason = BAD[case]
    pid = _dead_pid()
    path = _write_journal(db, pid)
    with open(path, "rb") as f:
        data = f.read()
    if case == "another database":  # its header must name this pid, or it is foreign anyway
        data = journal._header(db + "x", pid, 0) + data[64:]
    else:
        data = damage(data, db)
    with open(path, "wb") as f:
        f.write(data)

    report = recovery.recover(db)
    assert [(r.pid, r.journal) for r in report] == [(pid, "quarantined")]
    assert reason in report[0].journal_detail
    assert not os.path.exists(path)
    moved = [n for n in os.listdir(os.path.dirname(db)) if ".quarantined-" in n]
    assert len(moved) == 1
    with open(os.path.join(os.path.dirname(db), moved[0]), "rb") as f:
        assert f.read() == data  # kept as it was, for a human to look at
    # Nothing of it was applied, and the database carries on.
    conn = sqlite_concurrent.connect(db)
    assert conn.execute("SELECT * FROM t").fetchall() == [(1, "one")]
    conn.execute("INSERT INTO t VALUES (2, 'two')")
    conn.commit()
    conn.close()
    assert integrity_ok(db)


def test_intact_journal_of_a_dead_process_is_deleted_on_open(db):
    pid = _dead_pid()
    path = _write_journal(db, pid, txn_ids=(90, 91))
    conn = sqlite_concurrent.connect(db)  # recovery runs on every open
    assert not os.path.exists(path)
    assert conn.execute("SELECT * FROM t").fetchall() == [(1, "one")]
    conn.close()


def test_damaged_journal_is_quarantined_on_open_too(db, caplog):
    pid = _dead_pid()
    path = _write_journal(db, pid)
    with open(path, "r+b") as f:
        f.write(b"garbage!")
    conn = sqlite_concurrent.connect(db)
    conn.close()
    assert not os.path.exists(path)
    assert any("quarantined" in r.getMessage() for r in caplog.records)


def test_journal_of_a_live_process_is_left_alone(db):
    path = _write_journal(db, os.getppid())  # alive: the process that runs the tests' runner
    assert recovery.recover(db) == []
    assert os.path.exists(path)
    os.unlink(path)


def test_recover_cli_reports_journals(db):
    pid = _dead_pid()
    _write_journal(db, pid, txn_ids=(90,))
    bad_pid = _dead_pid()
    with open(journal.path_for(db, bad_pid), "wb") as f:
        f.write(b"not a journal at all")
    result = CliRunner().invoke(app, ["recover", db, "--json"])
    assert result.exit_code == 0, result.output
    report = {r["pid"]: r for r in json.loads(result.output)}
    assert report[pid]["journal"] == "deleted"
    assert report[pid]["discarded"] == [90]
    assert report[bad_pid]["journal"] == "quarantined"
    table = CliRunner().invoke(app, ["recover", db])
    assert "nothing to recover" in table.output


def test_writer_killed_waiting_to_commit_leaves_a_hot_journal_that_recovery_removes(db, tmp_path):
    """Killed at merge.locked after waiting for the merge lock (so its merge record is in its
    journal, offered to other mergers): nothing is committed, recovery removes the journal."""
    from workers import crash_victim

    from sqlite_concurrent import crashpoints
    from sqlite_concurrent.locking import oslock

    conn = sqlite_concurrent.connect(db)
    conn.executescript(
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
        "CREATE TABLE transfers(id TEXT PRIMARY KEY, amount INTEGER NOT NULL);"
        "INSERT INTO accounts SELECT value, 1000 FROM json_each('[0,1,2,3,4,5,6,7,8,9]');"
    )
    conn.close()
    merge_lock = oslock.ByteLock(db + "-locks", oslock.MERGE)
    merge_lock.acquire()
    try:
        os.environ[crashpoints.ENV] = "merge.locked"
        try:
            victim = SPAWN.Process(target=crash_victim, args=(db, "row", str(tmp_path / "a"), 1, 5))
            victim.start()
        finally:
            del os.environ[crashpoints.ENV]
        wait_until(
            lambda: (
                lock_rows(db, "SELECT count(*) FROM transactions WHERE state = 'ready'") != [(0,)]
            ),
            "the victim asks to commit",
        )
    finally:
        merge_lock.release()
    victim.join(60)
    hot = journal.path_for(db, victim.pid)
    assert os.path.getsize(hot) > journal.HEADER_SIZE
    report = recovery.recover(db)
    assert [(r.pid, r.journal, r.committed) for r in report] == [(victim.pid, "deleted", ())]
    assert len(report[0].discarded) == 1
    assert not os.path.exists(hot)
    assert lock_rows(db, "SELECT count(*) FROM transactions") == [(0,)]


def test_check_reports_quarantined_journals(db):
    pid = _dead_pid()
    with open(journal.path_for(db, pid), "wb") as f:
        f.write(b"not a journal")
    recovery.recover(db)
    result = CliRunner().invoke(app, ["check", db])
    assert "quarantined journals to inspect" in result.output


def test_short_foreign_file_is_called_foreign_not_truncated(db):
    pid = _dead_pid()
    with open(journal.path_for(db, pid), "wb") as f:
        f.write(b"garbage journal")
    (report,) = recovery.recover(db)
    assert report.journal == "quarantined" and "foreign" in report.journal_detail
