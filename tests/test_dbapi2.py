"""``sqlite_concurrent.dbapi2``: the stdlib's ``sqlite3.dbapi2``, as drivers import it."""

from __future__ import annotations

import sqlite3
import sqlite3.dbapi2
import subprocess
import sys
import textwrap
import types

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)


def _public(module: types.ModuleType) -> set[str]:
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    }


def test_dbapi2_has_every_public_name_of_the_stdlibs():
    import sqlite_concurrent.dbapi2 as imported
    from sqlite_concurrent import dbapi2

    assert imported is dbapi2 is sqlite_concurrent.dbapi2
    assert _public(sqlite3.dbapi2) - _public(dbapi2) == set()
    # The same objects as the package's: handlers written against either catch both.
    for name in _public(dbapi2):
        assert getattr(dbapi2, name) is getattr(sqlite_concurrent, name), name
    assert dbapi2.IntegrityError is sqlite_concurrent.IntegrityError
    assert dbapi2.sqlite_version_info == sqlite_concurrent.sqlite_version_info
    assert (dbapi2.paramstyle, dbapi2.apilevel) == ("qmark", "2.0")


def test_star_import_gives_the_stdlibs_names():
    ours: dict[str, object] = {}
    stdlib: dict[str, object] = {}
    exec("from sqlite_concurrent import *", ours)
    exec("from sqlite3 import *", stdlib)
    missing = {n for n, v in stdlib.items() if not isinstance(v, types.ModuleType)} - set(ours)
    assert missing == set()


# What Django and SQLAlchemy's pysqlite dialect do, with the module swapped in or not.
_PROGRAM = """
    import sys
    if {swap}:
        import sqlite_concurrent
        sys.modules["sqlite3"] = sqlite_concurrent
        sys.modules["sqlite3.dbapi2"] = sqlite_concurrent.dbapi2
    from sqlite3 import dbapi2 as Database
    import sqlite3.dbapi2

    assert sqlite3.dbapi2 is Database
    conn = Database.connect({path!r})
    conn.execute("CREATE TABLE t (k BLOB PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (?)", (Database.Binary(b"x"),))
    conn.commit()
    try:
        conn.execute("INSERT INTO t VALUES (?)", (Database.Binary(b"x"),))
    except Database.IntegrityError as e:
        print(type(e).__name__, e)
    print(conn.execute("SELECT k FROM t").fetchall(), Database.sqlite_version_info >= (3, 0))
    print(Database.connect.__module__.split(".")[0])
    conn.close()
"""


@pytest.mark.parametrize("how", ["sys.modules", "only the package"])
def test_driver_imports_get_ours_when_swapped_in(tmp_path, how):
    def run(swap: bool, path: str) -> list[str]:
        program = textwrap.dedent(_PROGRAM).format(swap=swap, path=path)
        if how == "only the package":
            program = program.replace('sys.modules["sqlite3.dbapi2"] =', "_ =")
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=50
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    stdlib = run(False, str(tmp_path / "stdlib.db"))
    ours = run(True, str(tmp_path / "ours.db"))
    assert stdlib[-1] == "_sqlite3" and ours[-1] == "sqlite_concurrent"
    assert ours[:-1] == stdlib[:-1]
