"""Run a slice of Django's test suite with sqlite_concurrent in place of ``sqlite3``.

    python tools/django_suite.py [--stdlib] [--json PATH] [--suite NAME] [--failures]
                                 [--fresh-baseline] [--timeout S]

e.g. ``/work/main/.venv/bin/python tools/django_suite.py --json django.json``.
Python 3.11+; needs PyPI.  The sdist of Django (pinned below) carries ``tests/runtests.py``;
that release is installed, with ``tblib`` (tracebacks from parallel workers), in a virtualenv
of its own under ``~/.cache/sqlite-concurrent-suites`` (see ``tools/suites.py`` for the
layout, the baseline and the report), and the slice runs first with the stdlib ``sqlite3`` as
the baseline, then with sqlite_concurrent swapped in (``tools/swap.py``).

The slice: the test apps ``backends transactions migrations schema introspection``, on FILE
databases: a generated settings module gives both aliases (``default``, ``other``) the
``sqlite3`` ENGINE, a ``NAME`` and a ``TEST`` ``NAME`` that are files in the run directory, and
a test runner that records each test's outcome (``tools/suite_plugins/suite_events_django.py``).
Four suites:

* ``django``: ``runtests.py --parallel 1``, one process;
* ``django-parallel2``: ``runtests.py --parallel 2``: Django copies each test database file for
  two worker processes, which it forks (the default start method on Linux).  Less one test,
  on both sides: ``backends.sqlite.tests.ThreadSharing.test_database_sharing_in_threads``
  closes every connection its threads used that is not the one it saw before its first query;
  a forked worker starts with that one closed (None), so the test closes the worker's own
  connection and every later test of that worker fails with "Cannot operate on a closed
  database", on the stdlib too (936 of them);
* ``django-backend`` and ``django-backend-parallel2``: the same two with nothing swapped in:
  the run with ours names our backend, ``"ENGINE": "sqlite_concurrent.django"``.

``--stdlib`` runs only the baselines (refreshing the cached ones).  Each run has ``--timeout``
seconds (default 2400); Django's runner has no per-test limit, so a test that hangs costs the
rest of its run, and the report then names it.
"""

from __future__ import annotations

from pathlib import Path

import suites

APPS = ["backends", "transactions", "migrations", "schema", "introspection"]

SETTINGS = """\
import os

ENGINE = (
    "sqlite_concurrent.django"
    if {backend!r} and os.environ.get({side!r}) == "ours"
    else "django.db.backends.sqlite3"
)
DATABASES = {{
    alias: {{
        "ENGINE": ENGINE,
        "NAME": {rundir!r} + f"/{{alias}}.sqlite3",
        "TEST": {{"NAME": {rundir!r} + f"/test_{{alias}}.sqlite3"}},
    }}
    for alias in ("default", "other")
}}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
TEST_RUNNER = "suite_events_django.EventsRunner"
"""


# Broken by Django's own test under forked workers with file databases (docstring).
FORKED_EXCLUDE = ["backends.sqlite.tests.ThreadSharing.test_database_sharing_in_threads"]


def command(parallel: int, *, backend: bool = False):
    exclude = FORKED_EXCLUDE if parallel > 1 else []

    def make(source: suites.Sdist, rundir: Path) -> suites.Command:
        settings = SETTINGS.format(rundir=str(rundir), backend=backend, side=suites.SIDE_VARIABLE)
        (rundir / "suite_settings.py").write_text(settings)
        return suites.Command(
            args=[
                str(source.path / "tests" / "runtests.py"),
                "--settings",
                "suite_settings",
                "--noinput",
                "--parallel",
                str(parallel),
                "-v",
                "1",
                *APPS,
            ],
            pythonpath=[rundir],
            env={"SQLITE_CONCURRENT_SUITE_EXCLUDE": " ".join(exclude)},
        )

    return make


RELEASE = suites.Release(
    name="Django",
    version="5.2.19",
    requirements=lambda source: [str(source.archive), "tblib"],
    suites=[
        suites.Suite(
            "django", " ".join(APPS) + " on files, --parallel 1", command(1), timeout=2400
        ),
        suites.Suite(
            "django-parallel2", " ".join(APPS) + " on files, --parallel 2", command(2), timeout=2400
        ),
        suites.Suite(
            "django-backend",
            " ".join(APPS) + " on files, --parallel 1, ENGINE sqlite_concurrent.django",
            command(1, backend=True),
            timeout=2400,
            swap=False,
        ),
        suites.Suite(
            "django-backend-parallel2",
            " ".join(APPS) + " on files, --parallel 2, ENGINE sqlite_concurrent.django",
            command(2, backend=True),
            timeout=2400,
            swap=False,
        ),
    ],
)

if __name__ == "__main__":
    suites.main(__doc__, __file__, RELEASE)
