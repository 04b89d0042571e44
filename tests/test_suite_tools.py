"""The pieces of the third-party suite runners (tools/) that decide what is counted.

The runners themselves need PyPI and minutes; these check, in real subprocesses, that the swap
puts our module in place of ``sqlite3`` and that outcomes are recorded as the runners count them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(TOOLS))

import suites  # noqa: E402
import swap  # noqa: E402

PROBE = """\
import json, sqlite3, sys
from sqlite3 import dbapi2
con = sqlite3.connect(":memory:")
con.execute("create table t (a)")
print(json.dumps({
    "module": sqlite3.__name__,
    "dbapi2": dbapi2.__name__,
    "dbapi2_connect_same_class": type(dbapi2.connect(":memory:")) is type(con),
}))
"""


def python_with(shim: Path, tmp_path: Path, code: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(shim), str(SRC)]),
        swap.MEMORY_DIR_VARIABLE: str(tmp_path / "memory"),
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("ours", [True, False])
@pytest.mark.parametrize("memory_as_file", [True, False])
def test_shim_swaps_the_module_and_can_turn_memory_into_files(tmp_path, ours, memory_as_file):
    (tmp_path / "memory").mkdir()
    shim = swap.write_shim(tmp_path / "shim", swap=ours, memory_as_file=memory_as_file)
    seen = python_with(shim, tmp_path, PROBE)
    assert seen["module"] == ("sqlite_concurrent" if ours else "sqlite3")
    assert seen["dbapi2"] == ("sqlite_concurrent.dbapi2" if ours else "sqlite3.dbapi2")
    assert seen["dbapi2_connect_same_class"]
    files = sorted(p.name for p in (tmp_path / "memory").glob("memory-*.db"))
    assert len(files) == (2 if memory_as_file else 0)


TESTS = """\
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_passes(): pass
def test_fails(): assert 1 == 2
def test_setup_error(broken): pass
def test_teardown_error(broken_teardown): pass
def test_skipped(): pytest.skip("not here")
@pytest.mark.xfail(reason="known")
def test_xfail(): assert False
@pytest.mark.xfail(reason="known")
def test_xpass(): pass
"""


def test_pytest_plugin_records_each_test_once_with_its_outcome(tmp_path):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(TESTS))
    events = tmp_path / "events.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(suites.PLUGINS),
        suites.EVENTS_VARIABLE: str(events),
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "suite_events_pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "test_sample.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    tests = suites.outcomes(suites.read_events(events), False, 1, lambda test_id: test_id)
    got = {i.split("::")[1]: t["outcome"] for i, t in tests.items()}
    assert got == {
        "test_passes": "passed",
        "test_fails": "failed",
        "test_setup_error": "errors",
        "test_teardown_error": "errors",
        "test_skipped": "skipped",
        "test_xfail": "skipped",
        "test_xpass": "passed",
    }
    assert tests["test_sample.py::test_setup_error"]["message"] == "RuntimeError: setup broke"


def test_a_test_the_run_died_in_counts_as_not_passed():
    events = [
        {"event": "start", "id": "a"},
        {"event": "end", "id": "a", "outcome": "passed"},
        {"event": "start", "id": "b"},
    ]
    tests = suites.outcomes(events, True, 30, lambda test_id: test_id)
    assert tests["a"]["outcome"] == "passed"
    assert tests["b"]["outcome"] == "errors"
    assert "timeout" in tests["b"]["message"]


def test_comparison_counts_tests_passing_on_the_stdlib_only():
    base = {
        "tests": {
            "a": {"outcome": "passed"},
            "b": {"outcome": "passed"},
            "c": {"outcome": "failed", "message": "x"},
        }
    }
    ours = {"tests": {"a": {"outcome": "passed"}, "c": {"outcome": "passed"}}}
    for side in (base, ours):
        side.update(returncode=0, killed_at_timeout=False, seconds=1, log="")
    result = suites.compare(base, ours)
    assert (result["stdlib_passed"], result["ours_passed"]) == (2, 2)
    assert [r["id"] for r in result["regressions"]] == ["b"]
    assert result["regressions"][0]["outcome"] == "not run"
    assert result["only_ours_passes"] == ["c"]
    assert result["kept"] == 0.5


def test_causes_group_messages_that_differ_only_in_names_and_numbers():
    assert suites.cause("no such table: main.foo") == suites.cause("no such table: bar")
    assert suites.cause("UNIQUE constraint failed: t.a") == "UNIQUE constraint failed: <x>"
    assert suites.cause("You can't execute 'x' now") == "You can't execute <x> now"
