"""Run a slice of SQLAlchemy's test suite with sqlite_concurrent in place of ``sqlite3``.

    python tools/sqlalchemy_suite.py [--stdlib] [--json PATH] [--failures]
                                     [--fresh-baseline] [--timeout S]

e.g. ``/work/main/.venv/bin/python tools/sqlalchemy_suite.py --json sqlalchemy.json``.
Python 3.11+; needs PyPI.  The sdist of SQLAlchemy (pinned below) carries its tests and the
pytest plugin they need (``test/conftest.py`` puts the sdist's ``lib/`` first on the path, so
the SQLAlchemy tested is the one the tests were written for).  They run in a virtualenv of
their own under ``~/.cache/sqlite-concurrent-suites`` (see ``tools/suites.py`` for the layout,
the baseline and the report), first with the stdlib ``sqlite3`` as the baseline, then with
sqlite_concurrent swapped in (``tools/swap.py``).  Suite ``sqlalchemy-dialect`` swaps nothing:
the run with ours names our dialect, ``--dburi sqlite+sqlite_concurrent:///...``.

The slice (suite ``sqlalchemy``): the SQLite dialect's tests (``test/dialect/sqlite/``), the
dialect compliance suite (``test/dialect/test_suite.py``) and the engine and ORM transaction
tests (``test/engine/test_transaction.py``, ``test/orm/test_transaction.py``), against a FILE
database: ``--dburi sqlite:///<run dir>/querytest.db``.  The provisioning code of SQLAlchemy's
plugin then ATTACHes a second file as schema ``test_schema`` on every connection, as it does on
the stdlib.

``--stdlib`` runs only the baseline (refreshing the cached one).  Each test has a 120 s limit
(pytest-timeout) and the run ``--timeout`` seconds (default 2400).  ``--maxfail`` is lifted:
the suite's own configuration stops after 250 failures.
"""

from __future__ import annotations

import re
from pathlib import Path

import suites

SELECTION = [
    "test/dialect/sqlite",
    "test/dialect/test_suite.py",
    "test/engine/test_transaction.py",
    "test/orm/test_transaction.py",
]


def command(*, dialect: bool = False):
    def make(source: suites.Sdist, rundir: Path) -> suites.Command:
        ours = dialect and rundir.name == "ours"  # the run's directory says which side it is
        driver = "sqlite+sqlite_concurrent" if ours else "sqlite"
        return suites.Command(
            args=[
                "-m",
                "pytest",
                *(str(source.path / s) for s in SELECTION),
                "--rootdir",
                str(source.path),  # where the plugin reads setup.cfg's [sqla_testing]
                "--dburi",
                f"{driver}:///{rundir / 'querytest.db'}",
                *(["-p", "sqlalchemy_dialect"] if ours else []),
                *suites.PYTEST_ARGS,
                "--maxfail",
                "1000000",
            ],
        )

    return make


RELEASE = suites.Release(
    name="SQLAlchemy",
    version="2.1.9",
    requirements=lambda source: ["typing-extensions>=4.6", "pytest", "pytest-timeout"],
    suites=[
        suites.Suite("sqlalchemy", " ".join(SELECTION) + " on a file", command(), timeout=2400),
        suites.Suite(
            "sqlalchemy-dialect",
            " ".join(SELECTION) + " on a file, sqlite+sqlite_concurrent:// against sqlite://",
            command(dialect=True),
            timeout=2400,
            swap=False,
        ),
    ],
    # Test classes are named per driver and SQLite version: AttachedDBTest_sqlite+pysqlite_3_40_1
    test_name=lambda test_id: re.sub(r"_sqlite\+\w+?(_\d+)+(?=::)", "_sqlite", test_id),
)

if __name__ == "__main__":
    suites.main(__doc__, __file__, RELEASE)
