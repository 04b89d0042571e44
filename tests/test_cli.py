"""The ``sqlite-concurrent`` command line: demo, stress, help text and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from sqlite_concurrent.cli import app

runner = CliRunner()


@pytest.mark.timeout(120)
def test_demo_runs_both_engines_and_passes_its_checks(tmp_path: Path) -> None:
    # A real subprocess: covers `python -m sqlite_concurrent` and spawning writers from it.
    proc = subprocess.run(
        [sys.executable, "-m", "sqlite_concurrent", "demo", "--duration", "0.5"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    out = proc.stdout
    for text in ("stock", "ours", "transactions/s", "ratio ours/stock", "integrity_check"):
        assert text in out
    verdicts = [line for line in out.splitlines() if line.startswith("Verdict:")]
    assert len(verdicts) == 1 and "every check passed" in verdicts[0].lower()
    assert "FAILED" not in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("engine", "workload"), [("ours", "transfer"), ("stock", "disjoint"), ("ours", "disjoint")]
)
def test_stress_prints_results_and_writes_json(tmp_path: Path, engine: str, workload: str) -> None:
    db = tmp_path / "stress.db"
    out_json = tmp_path / "result.json"
    args = ["stress", str(db), "-w", workload, "-e", engine, "-n", "2", "-d", "0.5"]
    result = runner.invoke(app, [*args, "--think-ms", "1", "--seed", "7", "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    assert "transactions/s" in result.output and "invariant" in result.output
    data = json.loads(out_json.read_text())
    assert data["engine"] == engine and data["workload"] == workload and data["writers"] == 2
    assert data["committed"] > 0 and data["committed"] == sum(
        [data["fewest_commits"], data["most_commits"]]
    )
    assert data["invariant_ok"] and data["integrity_ok"] and data["errors"] == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-n", "0"], "writers must be at least 1"),
        (["-w", "nope"], "unknown workload 'nope'"),
        (["-e", "postgres"], "unknown engine 'postgres'"),
        (["-d", "0"], "duration must be positive"),
        (["--think-ms", "-1"], "think time"),
        (["--json", "/nonexistent-dir/out.json"], "for --json does not exist"),
    ],
)
def test_stress_bad_input_is_one_line_error(tmp_path: Path, extra: list[str], message: str) -> None:
    db = tmp_path / "new.db"
    result = runner.invoke(app, ["stress", str(db), *extra])
    _assert_one_line_error(result, message)
    assert not db.exists()  # refused before creating anything


@pytest.mark.timeout(30)
def test_stress_refuses_missing_directory_and_existing_database(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "app.db"
    _assert_one_line_error(runner.invoke(app, ["stress", str(missing)]), "does not exist")
    existing = tmp_path / "app.db"
    existing.write_bytes(b"")
    _assert_one_line_error(runner.invoke(app, ["stress", str(existing)]), "already exists")


@pytest.mark.timeout(30)
def test_demo_bad_duration_is_one_line_error() -> None:
    _assert_one_line_error(runner.invoke(app, ["demo", "--duration", "0"]), "duration")


@pytest.mark.timeout(30)
def test_every_command_and_option_has_help() -> None:
    group = typer.main.get_command(app)
    assert group.help
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help"
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def _assert_one_line_error(result, message: str) -> None:
    assert result.exit_code not in (0, None), result.output
    # Exit through typer.Exit/SystemExit only: any other exception would be a traceback.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
