"""The documentation says what the code does: the README's commands are the ones CI runs, every
Python block in the README and docs/ runs as written, every ``connect()`` option is in the
README's reference table, and every command-line command and option is in docs/cli.md."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import sqlite_concurrent
from sqlite_concurrent.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci/run").read_text().splitlines()
    test_command = next(line for line in ci_lines if "pytest" in line and not line.startswith("#"))
    assert f"\n{test_command}\n" in README.read_text()


def test_readme_main_job_runs_the_demo():
    assert "python -m pip install . && sqlite-concurrent demo" in README.read_text()


def test_readme_stays_short():
    assert len(README.read_text().splitlines()) < 300


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_python_block_runs_as_written(path, tmp_path):
    """A file's blocks run in order in one fresh interpreter, in an empty directory, as a
    reader pasting them one after the other would."""
    blocks = _python_blocks(path)
    if not blocks:
        return
    script = "\n\n".join(blocks)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, f"{path.name}:\n{done.stderr[-3000:]}"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def test_every_connect_option_is_in_the_reference_table():
    table = _section(README.read_text(), "## `connect()` options")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = {re.match(r"\| `(\w+)`", row).group(1) for row in rows}
    options = set(inspect.signature(sqlite_concurrent.connect).parameters) - {"database"}
    assert options - documented == set(), "connect() options missing from the README's table"
    assert documented - options == set(), "the README's table names options connect() lacks"


def test_every_cli_command_and_option_is_in_docs_cli():
    text = (ROOT / "docs" / "cli.md").read_text()
    group = typer.main.get_command(app)
    assert group.commands, "no commands found"
    for name, command in group.commands.items():
        section = _section(text, f"## `sqlite-concurrent {name}")
        for param in command.params:
            if param.param_type_name == "option":
                assert any(f"`{opt}" in section for opt in param.opts), (name, param.opts)
            else:
                assert param.name.upper() in section, (name, param.name)
