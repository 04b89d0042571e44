"""``Connection.serialize`` and ``deserialize`` on file databases, against the stdlib's.

The stdlib's bytes of a WAL database say WAL in their header, which no SQLite can open from
memory; ours say rollback-journal mode (see serialization.py), so the stdlib's are compared after
the same two bytes are set.  Everything else must match: what the bytes hold, what the
connection does after ``deserialize``, and that the file is never touched.
"""

from __future__ import annotations

import sqlite3
import sys

import pytest

import sqlite_concurrent

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="the stdlib has them from 3.11"),
]

OURS = "_sqlite_concurrent"  # our bookkeeping, not the application's


def _contents(data: bytes) -> list:
    """Every table's rows and the schema, as the stdlib reads the bytes."""
    mem = sqlite3.connect(":memory:")
    try:
        mem.deserialize(data)
        schema = [
            r
            for r in mem.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            if not r[1].startswith(OURS)
        ]
        rows = [
            (name, mem.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall())
            for kind, name, _sql in schema
            if kind == "table"
        ]
        return [schema, rows]
    finally:
        mem.close()


def _stdlib_image(data: bytes) -> bytes:
    image = bytearray(data)
    image[18:20] = b"\x01\x01"
    return bytes(image)


def _open(mod, path):
    conn = mod.connect(path)
    if mod is sqlite3:
        conn.execute("PRAGMA journal_mode=WAL")
    return conn


def _serialized(mod, path):
    conn = _open(mod, path)
    images = []
    try:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [("a",), ("b",)])
        conn.commit()
        images.append(conn.serialize())  # committed
        conn.execute("UPDATE t SET v = 'B' WHERE id = 2")
        conn.execute("INSERT INTO t (v) VALUES ('c')")
        images.append(conn.serialize())  # with the open transaction
        assert conn.in_transaction
        conn.rollback()
        images.append(conn.serialize(name="main"))  # rolled back
        conn.execute("INSERT INTO t (v) VALUES ('d')")
        conn.execute("CREATE TABLE u (x)")  # ours: the transaction goes on on the merger
        conn.execute("INSERT INTO u VALUES (1)")
        images.append(conn.serialize())
        conn.commit()
    finally:
        conn.close()
    return images


def test_serialize_gives_what_the_connection_sees(tmp_path):
    stdlib = _serialized(sqlite3, str(tmp_path / "stdlib.db"))
    ours = _serialized(sqlite_concurrent, str(tmp_path / "ours.db"))
    assert [_contents(d) for d in ours] == [_contents(_stdlib_image(d)) for d in stdlib]
    assert _contents(ours[1])[1] == [("t", [(1, "a"), (2, "B"), (3, "c")])]
    for data in ours:  # as the stdlib's, but readable from memory
        assert data[18:20] == b"\x01\x01"
        assert data[:16] == b"SQLite format 3\x00"


def test_serialize_inside_a_transaction_has_the_databases_change_counter(tmp_path):
    conn = sqlite_concurrent.connect(str(tmp_path / "ours.db"))
    try:
        conn.execute("CREATE TABLE t (v)")
        committed = conn.serialize()
        conn.execute("INSERT INTO t VALUES (1)")
        pending = conn.serialize()
        conn.rollback()
    finally:
        conn.close()
    assert pending[24:28] == committed[24:28] and pending[92:96] == committed[92:96]


def test_serialize_errors_as_the_stdlib(tmp_path):
    outcomes = []
    for mod in (sqlite3, sqlite_concurrent):
        conn = _open(mod, str(tmp_path / f"{mod.__name__}.db"))
        conn.execute("CREATE TABLE t (v)")
        got = []
        for kwargs in ({"name": "nope"}, {"name": 1}):
            try:
                conn.serialize(**kwargs)
            except (sqlite3.Error, TypeError) as e:
                got.append((type(e).__name__, str(e) if isinstance(e, sqlite3.Error) else ""))
        outcomes.append(got)
        conn.close()
    assert outcomes[1] == outcomes[0]
    assert outcomes[0][0] == ("OperationalError", "unable to serialize 'nope'")


def _memory_image() -> bytes:
    mem = sqlite3.connect(":memory:")
    mem.execute("CREATE TABLE x (y)")
    mem.execute("INSERT INTO x VALUES ('hello')")
    mem.commit()
    data = mem.serialize()
    mem.close()
    return data


def _deserialized(mod, path, in_transaction: bool):
    conn = _open(mod, path)
    other = mod.connect(path)
    out = []

    def step(what, fn):
        try:
            result = fn()
        except sqlite3.Error as e:
            result = (type(e).__name__, str(e))
        out.append((what, result, conn.in_transaction))

    try:
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES ('file')")
        conn.commit()
        conn.execute("PRAGMA foreign_keys=ON")
        conn.create_function("twice", 1, lambda v: v * 2)
        if in_transaction:
            conn.execute("INSERT INTO t VALUES ('lost')")
        step("deserialize", lambda: conn.deserialize(_memory_image()))
        step("rollback", conn.rollback)
        step("its tables", lambda: conn.execute("SELECT name FROM sqlite_master").fetchall())
        step("old table", lambda: conn.execute("SELECT * FROM t").fetchall())
        step("function kept", lambda: conn.execute("SELECT twice(y) FROM x").fetchall())
        step("pragma kept", lambda: conn.execute("PRAGMA foreign_keys").fetchall())
        step("write", lambda: conn.execute("INSERT INTO x VALUES ('new')").rowcount)
        step("commit", conn.commit)
        step("rows", lambda: conn.execute("SELECT * FROM x").fetchall())
        step("serialize again", lambda: _contents(conn.serialize())[1])
        step("others see the file", lambda: other.execute("SELECT * FROM t").fetchall())
        step("others write the file", lambda: other.execute("INSERT INTO t VALUES ('w')").rowcount)
        step("others commit", other.commit)
        step("again", lambda: conn.deserialize(_memory_image()))
        step("rows again", lambda: conn.execute("SELECT * FROM x").fetchall())
    finally:
        conn.close()
        other.close()
    check = mod.connect(path)
    out.append(check.execute("SELECT * FROM t").fetchall())
    check.close()
    return out


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "in-transaction"])
def test_deserialize_makes_the_connection_private_and_leaves_the_file(tmp_path, in_transaction):
    stdlib = _deserialized(sqlite3, str(tmp_path / "stdlib.db"), in_transaction)
    ours = _deserialized(sqlite_concurrent, str(tmp_path / "ours.db"), in_transaction)
    assert ours == stdlib
    assert stdlib[-1] == [("file",), ("w",)]


def test_a_file_connection_opens_after_one_deserialized(tmp_path):
    """Leaving the shared database lets go of what a close would: others open and write."""
    path = str(tmp_path / "ours.db")
    conn = sqlite_concurrent.connect(path)
    conn.execute("CREATE TABLE t (v)")
    conn.commit()
    conn.deserialize(_memory_image())
    again = sqlite_concurrent.connect(path)
    again.execute("INSERT INTO t VALUES (1)")
    again.commit()
    conn.close()
    assert again.execute("SELECT * FROM t").fetchall() == [(1,)]
    again.close()


def test_deserialize_argument_errors_as_the_stdlib(tmp_path):
    outcomes = []
    for mod in (sqlite3, sqlite_concurrent):
        conn = _open(mod, str(tmp_path / f"{mod.__name__}.db"))
        got = []
        for arg in (memoryview(b"blob")[::2], [], 1, None):
            with pytest.raises((BufferError, TypeError)) as caught:
                conn.deserialize(arg)
            got.append(caught.type)
        conn.deserialize(b"\0\1\3")  # corrupt: found at the next statement
        with pytest.raises(mod.DatabaseError, match="file is not a database"):
            conn.execute("CREATE TABLE fail (f)")
        outcomes.append(got)
        conn.close()
    assert outcomes[1] == outcomes[0]
