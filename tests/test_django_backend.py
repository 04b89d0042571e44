"""The Django backend (``ENGINE: "sqlite_concurrent.django"``) against Django's own sqlite3
backend: the same script gives the same results, and the process exits cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).parent / "integrations" / "django_app.py"


def _run(engine: str, directory: Path) -> list:
    directory.mkdir()
    done = subprocess.run(
        [sys.executable, str(APP), engine, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.timeout(240)
def test_the_backend_behaves_as_djangos_sqlite3_backend(tmp_path):
    theirs = _run("django.db.backends.sqlite3", tmp_path / "stdlib")
    ours = _run("sqlite_concurrent.django", tmp_path / "ours")
    assert ours == theirs
    assert [["a", 1], ["b", 0]] in ours  # the clone holds what was committed


@pytest.mark.timeout(120)
def test_our_connect_options_go_in_options(tmp_path):
    script = (
        "import django; from django.conf import settings; "
        "settings.configure(DATABASES={'default': {'ENGINE': 'sqlite_concurrent.django', "
        f"'NAME': {str(tmp_path / 'a.db')!r}, "
        "'OPTIONS': {'lock_level': 'table', 'timeout': 7}}}, INSTALLED_APPS=[]); "
        "django.setup(); from django.db import connection; connection.ensure_connection(); "
        "print(type(connection.connection).__module__, connection.connection.lock_level, "
        "connection.connection.timeout)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["sqlite_concurrent.dbapi", "table", "7.0"]
