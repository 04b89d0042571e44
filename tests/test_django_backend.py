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
