"""The README's commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci/run").read_text().splitlines()
    test_command = next(line for line in ci_lines if "pytest" in line and not line.startswith("#"))
    assert f"\n{test_command}\n" in (ROOT / "README.md").read_text()


def test_readme_main_job_runs_the_demo():
    assert "python -m pip install . && sqlite-concurrent demo" in (ROOT / "README.md").read_text()
