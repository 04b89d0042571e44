"""The ``sqlite-concurrent`` command line: every command on small real databases, bad input,
a broken invariant, and help text and documentation for every command and option
(tests/test_docs.py checks each option is in docs/cli.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from sqlite_concurrent.cli.app import app
from sqlite_concurrent.dbapi import LOCK_LEVELS

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
CLI = [sys.executable, "-m", "sqlite_concurrent"]
# The writers print through rich; a pipe is not a terminal, so they print plain lines.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}


@pytest.mark.timeout(120)
def test_demo_runs_both_engines_and_passes_its_checks(tmp_path: Path) -> None:
    # A real subprocess: covers `python -m sqlite_concurrent` and spawning writers from it.
    proc = subprocess.run(
        [*CLI, "demo", "--duration", "0.5"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
        env=ENV,
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
    ("engine", "workload"),
    [
        ("ours", "ingest"),
        ("ours", "disjoint"),
        ("ours", "transfer"),
        ("ours", "owntable"),
        ("ours", "mixed"),
        ("stock", "transfer"),
        ("stock", "mixed"),
    ],
)
def test_stress_prints_results_and_writes_json(tmp_path: Path, engine: str, workload: str) -> None:
    db = tmp_path / "stress.db"
    out_json = tmp_path / "result.json"
    args = ["stress", str(db), "-w", workload, "-e", engine, "-n", "2", "-d", "0.3"]
    result = runner.invoke(app, [*args, "--think-ms", "1", "--seed", "7", "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "started: " in out  # the live display, as plain lines when not on a terminal
    for text in ("transactions/s", "latency p99 ms", "commits/writer fewest", "invariant"):
        assert text in out
    data = json.loads(out_json.read_text())
    assert data["engine"] == engine and data["workload"] == workload and data["writers"] == 2
    assert data["committed"] > 0
    assert data["fewest_commits"] + data["most_commits"] == data["committed"]
    assert 0 < data["p50_ms"] <= data["p95_ms"] <= data["p99_ms"] <= data["max_ms"]
    assert data["invariant_ok"] and data["integrity_ok"] and data["errors"] == []
    if workload == "mixed":
        assert data["tally"]["reads"] > 0 and data["tally"]["bad_reads"] == 0

    # The same database, again: the workload's own tables are recreated, nothing else.
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE keep (x)")
    conn.commit()
    conn.close()
    assert runner.invoke(app, args).exit_code == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM keep").fetchone() == (0,)
    conn.close()

    checked = runner.invoke(app, ["check", str(db)])
    assert checked.exit_code == 0, checked.output
    assert "Verdict: OK" in checked.output and "lock database" in checked.output


@pytest.mark.timeout(60)
def test_stress_exits_nonzero_when_a_stock_writer_breaks_the_sum(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    args = [*CLI, "stress", str(db), "-w", "transfer", "-n", "2", "-d", "50", "--think-ms", "1"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert proc.stdout is not None
        # The first progress report: every writer is running on the real table.
        for line in proc.stdout:
            if line.startswith("started: "):
                break
        else:
            pytest.fail(f"stress never started: {proc.wait()} {proc.stderr.read()}")
        # A stock writer (another process, the stdlib's SQLite) adds money out of nowhere.
        thief = subprocess.run(
            [sys.executable, "-c", _ADD_ONE_TO_ACCOUNT_0, str(db)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert thief.returncode == 0, thief.stderr
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stop early, then check and report
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err
    assert "invariant broken: sum of balances 100001, expected 100000" in out
    assert "stopped early (Ctrl-C)" in out


_ADD_ONE_TO_ACCOUNT_0 = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE stress_accounts SET balance = balance + 1 WHERE id = 0")
conn.execute("COMMIT")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("level", ["table", "page"])
def test_lock_level_is_passed_to_connect(tmp_path: Path, level: str) -> None:
    result = runner.invoke(
        app, ["stress", str(tmp_path / "l.db"), "--lock-level", level, "-d", "0.2", "-n", "2"]
    )
    if level in LOCK_LEVELS:
        assert result.exit_code == 0, result.output
        assert f"lock level {level}" in result.output
    else:  # connect() refuses it in the writers: one line, no traceback
        _assert_one_line_error(result, f"could not open {tmp_path / 'l.db'}")
        assert "lock_level" in result.stderr


@pytest.mark.timeout(60)
def test_bench_runs_both_engines_and_writes_json_and_chart(tmp_path: Path) -> None:
    out_json, chart = tmp_path / "b.json", tmp_path / "b.svg"
    result = runner.invoke(
        app,
        [
            "bench",
            "--workloads", "disjoint",
            "--writers", "1,2",
            "--think-ms", "2",
            "--duration", "0.2",
            "--repeats", "2",
            "--json", str(out_json),
            "--chart", str(chart),
            "--markdown",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ours/stock" in result.output and "| disjoint | 2 | 2 |" in result.output
    data = json.loads(out_json.read_text())
    runs = data["results"]
    assert len(runs) == 2 * 2 * 2  # writers x engines x repeats
    assert {(r["engine"], r["writers"], r["repeat"]) for r in runs} == {
        (e, n, rep) for e in ("ours", "stock") for n in (1, 2) for rep in (0, 1)
    }
    # Engines alternate: the first engine flips from one cell to the next.
    firsts = [runs[i]["engine"] for i in range(0, len(runs), 2)]
    assert firsts == ["stock", "ours", "ours", "stock"]
    for cell in data["cells"]:
        assert cell["ratio_min"] <= cell["ratio"] <= cell["ratio_max"]
        assert cell["ours"]["repeats"] == cell["stock"]["repeats"] == 2
        # How ours ran them: every committed transaction ran one of the three ways.
        ways = cell["ours"]["ways"]
        assert set(ways) <= {"direct", "optimistic", "escalated"}
        ours = [r for r in runs if r["engine"] == "ours" and r["writers"] == cell["writers"]]
        assert sum(ways.values()) >= sum(r["committed"] for r in ours) > 0
    assert data["environment"]["cpus"] == os.cpu_count()
    svg = ET.parse(chart).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f"{ns}polyline")) == 2  # one line per engine per workload
    texts = " ".join(t.text or "" for t in svg.iter(f"{ns}text"))
    for label in ("writer processes", "committed txn/s", "ours: sqlite_concurrent", "stock:"):
        assert label in texts


@pytest.mark.timeout(30)
def test_check_reports_corruption_and_hot_journals(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (a, b); CREATE INDEX ti ON t(a);"
        "INSERT INTO t VALUES (1, 10), (2, 20);"
    )
    conn.close()
    ok = runner.invoke(app, ["check", str(db)])
    assert ok.exit_code == 0 and "Verdict: OK" in ok.output
    assert "absent" in ok.output  # no -locks file: never opened by sqlite_concurrent

    # A journal left by a process that is gone.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    journal = Path(f"{db}-journal{int(dead.stdout)}")
    journal.write_bytes(b"")
    hot = runner.invoke(app, ["check", str(db)])
    assert hot.exit_code == 1 and "hot journals of dead processes" in hot.output
    assert "Verdict: PROBLEMS in journals" in hot.output
    journal.unlink()

    # Corrupt the index for real: its definition no longer matches its entries.
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_schema SET sql='CREATE INDEX ti ON t(b)' WHERE name='ti'")
    conn.commit()
    conn.close()
    bad = runner.invoke(app, ["check", str(db)])
    assert bad.exit_code == 1, bad.output
    assert "FAIL" in bad.output and "Verdict: PROBLEMS in integrity_check" in bad.output


@pytest.fixture
def exclusively_locked(tmp_path: Path) -> Iterator[Path]:
    """A database a stock connection in another process holds with an exclusive lock."""
    db = tmp_path / "held.db"
    conn = sqlite3.connect(db)
    conn.executescript("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    conn.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_EXCLUSIVE, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    try:
        yield db
    finally:
        holder.communicate("", timeout=10)  # closing stdin releases the lock


_HOLD_EXCLUSIVE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA locking_mode=EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", ["check", "stress"])
def test_exclusive_lock_is_a_one_line_error_within_the_timeout(
    exclusively_locked: Path, command: str
) -> None:
    result = runner.invoke(app, [command, str(exclusively_locked), "--timeout", "0.3"])
    _assert_one_line_error(result, "is locked by another connection (waited 0.3 s")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-n", "0"], "writers must be at least 1"),
        (["-w", "nope"], "unknown workload 'nope'"),
        (["-e", "postgres"], "unknown engine 'postgres'"),
        (["--lock-level", "column"], "unknown lock level 'column'"),
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
def test_missing_and_non_sqlite_files_are_one_line_errors(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no-such-dir" / "app.db"
    _assert_one_line_error(runner.invoke(app, ["stress", str(missing_dir)]), "does not exist")
    missing = tmp_path / "missing.db"
    _assert_one_line_error(runner.invoke(app, ["check", str(missing)]), "does not exist")
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    for command in ("check", "stress"):
        result = runner.invoke(app, [command, str(text)])
        _assert_one_line_error(result, "is not a SQLite database")
    assert text.read_text() == "not a database\n"
    _assert_one_line_error(runner.invoke(app, ["check", str(tmp_path)]), "is a directory")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--writers", "1,x"], "--writers takes a comma-separated list"),
        (["--writers", "0"], "writers must be at least 1"),
        (["--workloads", "ingest,nope"], "unknown workload 'nope'"),
        (["--repeats", "0"], "repeats must be at least 1"),
        (["--chart", "/nonexistent-dir/c.svg"], "for --chart does not exist"),
    ],
)
def test_bench_bad_input_is_one_line_error(extra: list[str], message: str) -> None:
    _assert_one_line_error(runner.invoke(app, ["bench", *extra]), message)


@pytest.mark.timeout(30)
def test_read_only_directory_is_a_one_line_error() -> None:
    command = [*CLI]
    if os.geteuid() == 0:
        # root ignores directory permissions: run the command without that capability.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is not installed")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *CLI]
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o555)
        try:
            proc = subprocess.run(
                [*command, "stress", os.path.join(tmp, "new.db"), "-d", "0.1"],
                capture_output=True,
                text=True,
                timeout=20,
                env=ENV,
            )
        finally:
            os.chmod(tmp, 0o755)
        assert os.listdir(tmp) == []
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: directory {tmp} is not writable (the -wal and -locks files go there)"
    ]


@pytest.mark.timeout(30)
def test_demo_bad_duration_is_one_line_error() -> None:
    _assert_one_line_error(runner.invoke(app, ["demo", "--duration", "0"]), "duration")


@pytest.mark.timeout(30)
def test_every_command_and_option_has_help_and_is_documented() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    readme = (ROOT / "README.md").read_text()
    group = typer.main.get_command(app)
    assert group.help
    assert {"demo", "stress", "bench", "check", "status"} <= set(group.commands)
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help"
        assert f"`{name}" in readme, f"README does not name {name}"
        assert f"## `sqlite-concurrent {name}" in reference, f"docs/cli.md lacks {name}"
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
    assert re.search(r"\(bench\.svg\)", reference), "docs/cli.md does not show the chart"


def _assert_one_line_error(result, message: str) -> None:
    assert result.exit_code not in (0, None), result.output
    # Exit through typer.Exit/SystemExit only: any other exception would be a traceback.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
