"""The harness shared by the runners of third-party test suites (``tools/*_suite.py``).

Each runner names a release on PyPI whose source distribution carries its tests, the packages
the tests need, and one or more *suites*: a command that runs a selection of those tests.  For
each suite the harness runs the command twice, in the same throwaway virtualenv and the same way,
once with the stdlib ``sqlite3`` (the baseline) and once with sqlite_concurrent swapped in for
it (``tools/swap.py``), and compares the two test by test.

Everything lives under a cache directory (``$SQLITE_CONCURRENT_SUITES_CACHE``, default
``~/.cache/sqlite-concurrent-suites``), never in the project's own environment:

* ``downloads/``: the source distributions (``pip download --no-binary``);
* ``src/<name>-<version>/``: each one unpacked;
* ``venvs/<runner>/``: a virtualenv with the suite's requirements and the project's runtime
  dependencies (the project itself is put on ``PYTHONPATH`` from this checkout's ``src/``, so
  the code tested is the working tree's);
* ``runs/<suite>/{stdlib,ours}/``: the last run of each (``output.log``, ``events.jsonl``, the
  current directory ``cwd/``, ``tmp/`` as TMPDIR and ``memory/`` for ``memory_as_file``);
* ``runs/<suite>/baseline.json``: the last baseline, reused while the release, the selection,
  the Python and the harness's own files are unchanged (``--stdlib`` runs it again).

Outcomes are recorded test by test as JSON lines (``tools/suite_plugins/``) so that a run
killed by its ``--timeout`` still counts the tests it finished; a test it was in the middle of,
or never reached, counts as not passed.

Reported per suite: the tests the stdlib passes, those ours passes, ours as a share of the
stdlib's, and every test that passes on the stdlib but not on ours ("regressions"), with its
message, grouped by message into causes.  ``--json PATH`` writes all of it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import swap

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
PLUGINS = TOOLS / "suite_plugins"
EVENTS_VARIABLE = "SQLITE_CONCURRENT_SUITE_EVENTS"  # as in suite_plugins/suite_events.py
SIDE_VARIABLE = "SQLITE_CONCURRENT_SUITE_SIDE"  # "stdlib" or "ours": which run this is
OUTCOMES = ("passed", "failed", "errors", "skipped")
CAUSES_SHOWN = 8
# How a pytest suite is run: outcomes recorded, nothing cached into the sdist, each test limited.
PYTEST_ARGS = ["-p", "suite_events_pytest", "-p", "no:cacheprovider", "--timeout", "120", "-q"]


def cache_root() -> Path:
    default = Path.home() / ".cache" / "sqlite-concurrent-suites"
    return Path(os.environ.get("SQLITE_CONCURRENT_SUITES_CACHE") or default)


@dataclass(frozen=True)
class Command:
    """How to run a suite: the arguments after the venv's Python, and what it needs."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    pythonpath: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Suite:
    name: str
    selection: str  # what is run, for the baseline's cache key and the report
    command: Callable[[Sdist, Path], Command]  # the unpacked sdist, the run's directory
    memory_as_file: bool = False
    timeout: float = 1800.0
    # False: the run with ours does not swap the module in; the suite's own settings pick our
    # integration (a Django backend, a SQLAlchemy dialect) from SIDE_VARIABLE instead.
    swap: bool = True


@dataclass(frozen=True)
class Sdist:
    archive: Path  # as downloaded: installable with pip
    path: Path  # unpacked


@dataclass(frozen=True)
class Release:
    """A PyPI release whose sdist carries the tests, what they need, and what is run."""

    name: str
    version: str
    requirements: Callable[[Sdist], list[str]]
    suites: list[Suite]
    # A test's name that is the same on both sides, where the suite puts the SQLite version
    # (which differs: the stdlib's and APSW's) into it.
    test_name: Callable[[str], str] = lambda test_id: test_id


# -- environment ---------------------------------------------------------------------------


def pip(python: Path | str, *args: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.exit(f"pip {' '.join(args)} failed:\n{done.stdout}")


def sdist(release: Release) -> Sdist:
    """The release's source distribution, downloaded and unpacked once."""
    root = cache_root()
    target = root / "src" / f"{release.name.lower()}-{release.version}"
    complete = target / ".complete"
    if complete.exists():
        return Sdist(Path(complete.read_text().strip()), target)
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    spec = f"{release.name}=={release.version}"
    # --no-binary for this package only: build dependencies may still come as wheels.
    pip(
        sys.executable,
        "download",
        "--no-deps",
        "--no-binary",
        release.name,
        spec,
        "-d",
        str(downloads),
    )
    names = release.name.lower().replace("-", "_"), release.name.lower()
    (archive,) = [
        p
        for p in downloads.glob("*.tar.gz")
        if p.name.lower().startswith(tuple(f"{n}-{release.version}." for n in names))
    ]
    shutil.rmtree(target, ignore_errors=True)
    unpacked = target.with_name(target.name + ".partial")
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    (top,) = list(unpacked.iterdir())
    top.rename(target)
    unpacked.rmdir()
    complete.write_text(f"{archive}\n")
    return Sdist(archive, target)


def project_dependencies() -> list[str]:
    import tomllib  # Python 3.11+: the runners are tools, not part of the package

    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def venv(name: str, requirements: list[str]) -> Path:
    """A virtualenv with ``requirements`` and the project's dependencies; its Python."""
    directory = cache_root() / "venvs" / name
    python = directory / "bin" / "python"
    wanted = "\n".join([sys.version, *requirements, *project_dependencies()]) + "\n"
    stamp = directory / "installed.txt"
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    shutil.rmtree(directory, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    pip(python, "install", *requirements, *project_dependencies())
    stamp.write_text(wanted)
    return python


# -- one run -------------------------------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
            events.append(json.loads(line))
    return events


def run(
    release: Release, suite: Suite, source: Sdist, python: Path, *, stdlib: bool
) -> dict[str, Any]:
    """Run ``suite`` once; the outcome of every test it reached, and how the run ended."""
    rundir = cache_root() / "runs" / suite.name / ("stdlib" if stdlib else "ours")
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    command = suite.command(source, rundir)
    shim = swap.write_shim(
        rundir / "shim", swap=suite.swap and not stdlib, memory_as_file=suite.memory_as_file
    )
    # Three directories apart: a test that prints temporary paths relative to the current
    # directory must not see them shortened.
    for directory in ("memory", "tmp", "cwd"):
        (rundir / directory).mkdir()
    events, log = rundir / "events.jsonl", rundir / "output.log"
    path = [shim, PLUGINS, ROOT / "src", *command.pythonpath]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        **command.env,
        "PYTHONPATH": os.pathsep.join(map(str, path)),
        EVENTS_VARIABLE: str(events),
        SIDE_VARIABLE: "stdlib" if stdlib else "ours",
        swap.MEMORY_DIR_VARIABLE: str(rundir / "memory"),
        "TMPDIR": str(rundir / "tmp"),
        "PYTHONFAULTHANDLER": "1",  # a crash leaves its stack in the log
    }
    started = time.monotonic()
    with log.open("w") as out:
        # A session of its own, so a timeout ends the whole tree this run started, and only it.
        proc = subprocess.Popen(
            [str(python), *command.args],
            cwd=rundir / "cwd",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=suite.timeout)
            killed = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
    return {
        "stdlib": stdlib,
        "returncode": proc.returncode,
        "killed_at_timeout": killed,
        "seconds": round(time.monotonic() - started, 1),
        "log": str(log),
        "tests": outcomes(read_events(events), killed, suite.timeout, release.test_name),
    }


def outcomes(
    events: list[dict[str, Any]], killed: bool, timeout: float, name: Callable[[str], str]
) -> dict[str, Any]:
    tests: dict[str, Any] = {}
    started: list[str] = []
    for e in events:
        if e["event"] == "start":
            started.append(name(e["id"]))
        elif e["event"] == "end":
            tests[name(e["id"])] = {k: v for k, v in e.items() if k not in ("event", "id")}
    why = f"killed: the run passed its {timeout:g} s timeout" if killed else "the run ended"
    for test_id in started:
        if test_id not in tests:
            tests[test_id] = {"outcome": "errors", "message": f"did not finish ({why} in it)"}
    return tests


def counts(tests: dict[str, Any]) -> dict[str, int]:
    found = collections.Counter(t["outcome"] for t in tests.values())
    return {"tests": len(tests), **{o: found[o] for o in OUTCOMES}}


# -- baseline cache ------------------------------------------------------------------------


def baseline_key(release: Release, suite: Suite, runner: Path) -> str:
    harness = [TOOLS / "suites.py", TOOLS / "swap.py", runner, *sorted(PLUGINS.glob("*.py"))]
    digest = hashlib.sha256()
    for part in [release.name, release.version, suite.name, suite.selection, sys.version]:
        digest.update(part.encode() + b"\0")
    for path in harness:
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def baseline(
    release: Release, suite: Suite, source: Sdist, python: Path, runner: Path, fresh: bool
) -> dict[str, Any]:
    cached = cache_root() / "runs" / suite.name / "baseline.json"
    key = baseline_key(release, suite, runner)
    if not fresh and cached.exists():
        data = json.loads(cached.read_text())
        if data.get("key") == key:
            return data["run"]
    result = run(release, suite, source, python, stdlib=True)
    cached.write_text(json.dumps({"key": key, "run": result}) + "\n")
    return result


# -- comparison ----------------------------------------------------------------------------

_QUOTED = re.compile(r"(?<!\w)('[^']*'|\"[^\"]*\")(?!\w)")  # not the "'" of "can't"
_NUMBER = re.compile(r"\b0x[0-9a-fA-F]+\b|\b\d+(\.\d+)?\b")
_TAIL_NAME = re.compile(r"(: )[\w.\[\]`\"'()-]+$")  # "no such table: main.foo"
_MODULE = re.compile(r"\b(?:\w+\.)+(\w*(?:Error|Exception|Warning))\b")  # the class alone
_PATH = re.compile(r"(/[\w.@+-]+){2,}")


# An exception shown inside an assertion, e.g. click's <Result OperationalError('...')>.
_EMBEDDED = re.compile(r"\b(\w*(?:Error|Exception))\((['\"])(.*?)\2\)")
# Signs of one known difference that assertion messages show in many shapes.
_SIGNS = {"_sqlite_con": "a _sqlite_concurrent_* table shows in the schema"}


def cause(message: str) -> str:
    """The gist of a message, names, numbers and paths taken out, to group failures by."""
    for sign, label in _SIGNS.items():
        if sign in message:
            return label
    embedded = _EMBEDDED.search(message)
    first = message.strip().splitlines()[0] if message.strip() else ""
    if embedded and not _EMBEDDED.match(first):
        first = f"{embedded.group(1)}: {embedded.group(3)}"
    text = _MODULE.sub(r"\1", _PATH.sub("<path>", first.strip()))
    text = _QUOTED.sub("<x>", text)
    text = _TAIL_NAME.sub(r"\1<x>", text)
    text = _NUMBER.sub("<n>", text)
    return text[:200] or "(no message)"


def compare(base: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    stdlib_passed = sorted(i for i, t in base["tests"].items() if t["outcome"] == "passed")
    ours_tests = ours["tests"]
    missing = {"outcome": "not run", "message": "never started (the run ended before it)"}
    regressions = []
    for test_id in stdlib_passed:
        got = ours_tests.get(test_id, missing)
        if got["outcome"] != "passed":
            regressions.append({"id": test_id, **got})
    ours_passed = counts(ours_tests)["passed"]
    n = len(stdlib_passed)
    grouped = collections.Counter(cause(r["message"]) for r in regressions)
    return {
        "stdlib": {**counts(base["tests"]), **_run_facts(base)},
        "ours": {**counts(ours_tests), **_run_facts(ours)},
        "stdlib_passed": n,
        "ours_passed": ours_passed,
        "share": ours_passed / n if n else 0.0,
        "kept": (n - len(regressions)) / n if n else 0.0,
        "regressions_count": len(regressions),
        "only_ours_passes": sorted(
            i
            for i, t in ours_tests.items()
            if t["outcome"] == "passed" and base["tests"].get(i, {}).get("outcome") != "passed"
        ),
        "causes": [{"count": c, "cause": m} for m, c in grouped.most_common()],
        "regressions": regressions,
    }


def _run_facts(run_result: dict[str, Any]) -> dict[str, Any]:
    keys = ("returncode", "killed_at_timeout", "seconds", "log")
    return {k: run_result[k] for k in keys}


def summary_line(name: str, result: dict[str, Any]) -> str:
    killed = [side for side in ("stdlib", "ours") if result[side]["killed_at_timeout"]]
    note = f"; killed at timeout: {', '.join(killed)}" if killed else ""
    return (
        f"{name}: stdlib {result['stdlib_passed']} passed, ours {result['ours_passed']}"
        f" = {result['share']:.1%}; {result['regressions_count']} pass on the stdlib only"
        f" ({result['kept']:.1%} of its passes kept){note}"
    )


# -- command line --------------------------------------------------------------------------


def main(doc: str, runner: str, release: Release) -> None:
    """The command line of a runner: ``doc`` is its docstring, ``runner`` its ``__file__``."""
    suites = release.suites
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stdlib", action="store_true", help="run only the stdlib baseline (and refresh its cache)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write all results here")
    parser.add_argument(
        "--fresh-baseline",
        action="store_true",
        help="run the baseline again even if a cached one matches",
    )
    parser.add_argument(
        "--suite",
        action="append",
        choices=[s.name for s in suites],
        help="run only this suite (repeatable)",
    )
    parser.add_argument("--timeout", type=float, help="seconds per run (default: per suite)")
    parser.add_argument(
        "--failures",
        action="store_true",
        help="list every test that passes on the stdlib only, with its message",
    )
    args = parser.parse_args()
    chosen = [s for s in suites if not args.suite or s.name in args.suite]
    if args.timeout:
        chosen = [dataclasses.replace(s, timeout=args.timeout) for s in chosen]
    source = sdist(release)
    python = venv(Path(runner).stem, release.requirements(source))
    report: dict[str, Any] = {
        "runner": Path(runner).name,
        "release": f"{release.name}=={release.version}",
        "python": sys.version,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "suites": {},
    }
    for suite in chosen:
        fresh = args.stdlib or args.fresh_baseline
        base = baseline(release, suite, source, python, Path(runner), fresh)
        if args.stdlib:
            c = counts(base["tests"])
            print(
                f"{suite.name} (stdlib): {c['passed']} passed, {c['failed']} failed,"
                f" {c['errors']} errors, {c['skipped']} skipped in {base['seconds']:g} s"
            )
            report["suites"][suite.name] = {"selection": suite.selection, "stdlib": base}
            continue
        ours = run(release, suite, source, python, stdlib=False)
        result = {"selection": suite.selection, **compare(base, ours)}
        report["suites"][suite.name] = result
        print(summary_line(suite.name, result))
        for c in result["causes"][:CAUSES_SHOWN]:
            print(f"  {c['count']:>5}  {c['cause']}")
        if args.failures:
            for r in result["regressions"]:
                message = " / ".join(r["message"].splitlines())[:300]
                print(f"  {r['outcome'].upper()} {r['id']}: {message}")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
