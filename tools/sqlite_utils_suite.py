"""Run sqlite-utils' own test suite with sqlite_concurrent in place of ``sqlite3``.

    python tools/sqlite_utils_suite.py [--stdlib] [--json PATH] [--suite NAME] [--failures]
                                       [--fresh-baseline] [--timeout S]

e.g. ``/work/main/.venv/bin/python tools/sqlite_utils_suite.py --json sqlite-utils.json``.
Python 3.11+; needs PyPI.  The sdist of sqlite-utils (pinned below) carries its tests; they
run in a virtualenv of their own under ``~/.cache/sqlite-concurrent-suites`` (see
``tools/suites.py`` for the layout, the baseline and the report), first with the stdlib
``sqlite3`` as the baseline, then with sqlite_concurrent swapped in (``tools/swap.py``).

Two suites, the whole of ``tests/`` each time:

* ``sqlite-utils``: as the suite is written.  Almost every test uses ``Database(memory=True)``,
  i.e. ``connect(":memory:")``, which sqlite_concurrent serves with one private SQLite
  connection, as the stdlib would; this checks the DB-API face.
* ``sqlite-utils-files``: every ``:memory:`` (and ``""``) database becomes a new file, for both
  modules, so the same tests go through snapshots, private views and merges.

``--stdlib`` runs only the baselines (refreshing the cached ones).  Each test has a 120 s
limit (pytest-timeout) and each run ``--timeout`` seconds (default 1200).
"""

from __future__ import annotations

from pathlib import Path

import suites


def command(source: suites.Sdist, rundir: Path) -> suites.Command:
    # The sdist as rootdir, run from elsewhere: nothing is written into it.
    return suites.Command(
        args=[
            "-m",
            "pytest",
            str(source.path / "tests"),
            "--rootdir",
            str(source.path),
            *suites.PYTEST_ARGS,
        ],
    )


RELEASE = suites.Release(
    name="sqlite-utils",
    version="4.2.1",
    # The sdist itself, so the code is the one its tests were written for; cogapp and
    # hypothesis are what its tests import beyond pytest.
    requirements=lambda source: [
        str(source.archive),
        "pytest",
        "pytest-timeout",
        "hypothesis",
        "cogapp",
    ],
    suites=[
        suites.Suite("sqlite-utils", "tests/", command, timeout=1200),
        suites.Suite(
            "sqlite-utils-files",
            "tests/, each :memory: a file",
            command,
            memory_as_file=True,
            timeout=1200,
        ),
    ],
)

if __name__ == "__main__":
    suites.main(__doc__, __file__, RELEASE)
