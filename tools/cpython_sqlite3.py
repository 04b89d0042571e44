"""Run CPython's own sqlite3 test suite (``test.test_sqlite3``) against sqlite_concurrent.

    python tools/cpython_sqlite3.py [--failures] [--json PATH] [--timeout S] [-j N]
                                    [--stdlib | --memory-as-file]

``--stdlib`` runs the same harness on the stdlib module, as a baseline for the harness itself.
``--memory-as-file`` hands ``connect(":memory:")`` (and ``""``) a fresh file instead: most tests
open an in-memory database, which sqlite_concurrent refuses by design, so without it that one
refusal hides everything else those tests would find.

How the tests are pointed at our module
---------------------------------------
Through ``tools/swap.py``: a generated ``sitecustomize`` on the workers' PYTHONPATH aliases
``sqlite3`` (and ``sqlite3.dbapi2``) to sqlite_concurrent before the tests import it, so that a
Python a test starts itself gets it too (``MultiprocessTests`` runs ``import sqlite3`` in a child
interpreter that must lock the same file as the parent).  Its docstring says what is aliased
and why.

Several test modules read module attributes at import time (``test_dbapi``'s ``cx_limit`` has
``sqlite.SQLITE_LIMIT_SQL_LENGTH`` as a default argument, and six modules import it), so one
missing constant would turn a whole module into a single import error and hide its tests.
While the tests are imported, a missing attribute is therefore taken from the stdlib and
recorded; the report lists these "borrowed" names.  The tests themselves run with the
fallback removed, so any use of a missing name in a test body fails as it should.

Each test module runs in its own worker process (several at once) with a per-test timeout:
faulthandler kills a worker that stays silent for ``--timeout`` seconds, the test that hung is
recorded as an error and the worker is restarted on the tests not yet run.

Pass rate = passed / (tests - skipped).  Tests that the suite itself skips by feature detection
(``SerializeTests`` when ``Connection`` has no ``serialize``) count as skipped, not failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import faulthandler
import importlib.util
import itertools
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import swap

PACKAGE = "test.test_sqlite3"
OUTCOMES = ("passed", "failed", "errors", "skipped")

# -- worker: runs one test module, streaming one JSON line per event ------------------------


class StreamingResult(unittest.TestResult):
    """Writes each test's outcome as soon as it is known, so a killed worker loses nothing."""

    def __init__(self, out: Any, timeout: float) -> None:
        super().__init__()
        self.out = out
        self.timeout = timeout
        self.current: dict[str, Any] | None = None

    def emit(self, **event: Any) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def arm(self) -> None:
        # Re-armed, never cancelled: class fixtures and interpreter exit can hang too.
        faulthandler.dump_traceback_later(self.timeout, exit=True)

    def startTest(self, test: unittest.TestCase) -> None:  # noqa: N802 - unittest API
        super().startTest(test)
        self.arm()
        self.current = {"id": test.id(), "outcome": "passed", "message": ""}
        self.emit(event="start", id=test.id())

    def stopTest(self, test: unittest.TestCase) -> None:  # noqa: N802 - unittest API
        super().stopTest(test)
        if self.current is not None:
            self.emit(event="end", **self.current)
        self.current = None
        self.arm()

    def record(self, test: Any, outcome: str, err: Any = None, message: str = "") -> None:
        entry: dict[str, Any] = {"id": test.id(), "outcome": outcome, "message": message}
        if err is not None:
            text = f"{err[0].__name__}: {err[1]}".strip()
            entry["message"] = text.splitlines()[0] if text else err[0].__name__
            entry["traceback"] = self._exc_info_to_string(err, test)
        if self.current is None:
            # setUpClass/tearDownClass failures arrive outside any test.
            self.emit(event="end", **entry)
        elif self.current["outcome"] == "passed":  # the first subtest failure is kept
            if entry["id"] != self.current["id"]:
                entry["subtest"] = entry.pop("id")
            self.current.update(entry)

    def addError(self, test: Any, err: Any) -> None:  # noqa: N802 - unittest API
        super().addError(test, err)
        self.record(test, "errors", err)

    def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802 - unittest API
        super().addFailure(test, err)
        self.record(test, "failed", err)

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802 - unittest API
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self.record(subtest, "failed" if failed else "errors", err)

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802 - unittest API
        super().addSkip(test, reason)
        self.record(test, "skipped", message=reason)

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802 - unittest API
        super().addUnexpectedSuccess(test)
        self.record(test, "failed", message="unexpected success")


def flatten(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from flatten(test)
        else:
            yield test


def load_borrowing(module: str, borrowed: set[str]) -> unittest.TestSuite:
    """Import and load ``module``, lending the stdlib's attributes to ours for the import only."""
    from sitecustomize import stdlib_sqlite3  # type: ignore[import-not-found]

    import sqlite_concurrent

    namespace = vars(sqlite_concurrent)
    own = namespace.get("__getattr__")  # a module __getattr__ of ours, if it ever has one

    def fallback(name: str) -> Any:
        if own is not None:
            with contextlib.suppress(AttributeError):
                return own(name)
        if name.startswith("__") or not hasattr(stdlib_sqlite3, name):
            raise AttributeError(f"module 'sqlite_concurrent' has no attribute {name!r}")
        borrowed.add(name)
        return getattr(stdlib_sqlite3, name)

    namespace["__getattr__"] = fallback
    try:
        return unittest.defaultTestLoader.loadTestsFromName(module)
    finally:
        if own is None:
            del namespace["__getattr__"]
        else:
            namespace["__getattr__"] = own


def memory_as_file() -> None:
    """Make ``connect(":memory:")`` open a new file: as private as a memory database."""
    import sqlite_concurrent

    real, numbers = sqlite_concurrent.connect, itertools.count()

    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        if database in (":memory:", ""):
            # The pid: a worker restarted after a hang must not reopen an earlier one's file.
            database = os.path.abspath(f"memory-{os.getpid()}-{next(numbers)}.db")
        return real(database, *args, **kwargs)

    sqlite_concurrent.connect = connect


def worker(module: str, events: Path, args: argparse.Namespace) -> None:
    faulthandler.dump_traceback_later(args.timeout, exit=True)
    from test import support

    support.verbose = 0  # as regrtest sets it; verbose only adds output
    done = {e["id"] for e in read_events(events) if e["event"] == "end"}
    borrowed: set[str] = set()
    if args.stdlib:
        suite = unittest.defaultTestLoader.loadTestsFromName(module)
    else:
        import sqlite_concurrent

        if sys.modules.get("sqlite3") is not sqlite_concurrent:
            sys.exit("sqlite3 is not aliased to sqlite_concurrent: the sitecustomize did not run")
        if args.memory_as_file:
            memory_as_file()
        suite = load_borrowing(module, borrowed)
    with events.open("a") as out:
        result = StreamingResult(out, args.timeout)
        result.emit(event="borrowed", names=sorted(borrowed))
        unittest.TestSuite(t for t in flatten(suite) if t.id() not in done).run(result)


# -- parent: one worker per module, restarted past hung tests ---------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_module(module: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    workdir = tmp / module
    workdir.mkdir()
    events, log = workdir / "events.jsonl", workdir / "worker.log"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", module, "--events", str(events)]
    cmd += ["--timeout", str(args.timeout)]
    cmd += [f"--{k.replace('_', '-')}" for k in ("stdlib", "memory_as_file") if getattr(args, k)]
    shim = [] if args.stdlib else [str(tmp / "shim")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*shim, os.environ.get("PYTHONPATH", "")])}
    while True:
        with log.open("w") as out:
            # cwd: the tests create their files (TESTFN) in the current directory.
            rc = subprocess.run(
                cmd,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        if rc == 0:
            break
        seen = read_events(events)
        ended = {e["id"] for e in seen if e["event"] == "end"}
        hung = [e["id"] for e in seen if e["event"] == "start" and e["id"] not in ended]
        text = log.read_text(errors="replace")
        if "Timeout (" in text:
            why = f"Timeout: no progress for {args.timeout:g}s, worker killed"
        else:
            why = f"worker exited with code {rc}: " + (text.strip().splitlines() or [""])[-1]
        end = {
            "event": "end",
            "id": hung[0] if hung else f"{module} (worker)",
            "outcome": "errors",
            "message": why,
            "traceback": text[-4000:],
        }
        with events.open("a") as f:
            f.write(json.dumps(end) + "\n")
        if not hung:  # not inside a test: nothing left to resume
            break
    seen = read_events(events)
    tests = [{k: v for k, v in e.items() if k != "event"} for e in seen if e["event"] == "end"]
    borrowed = sorted({n for e in seen if e["event"] == "borrowed" for n in e["names"]})
    counts = {o: sum(t["outcome"] == o for t in tests) for o in OUTCOMES}
    return {"counts": {"tests": len(tests), **counts}, "borrowed": borrowed, "tests": tests}


def test_modules() -> list[str]:
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.submodule_search_locations is not None
    found = pkgutil.iter_modules(spec.submodule_search_locations)
    return sorted(f"{PACKAGE}.{m.name}" for m in found if m.name.startswith("test_"))


def pass_rate(counts: dict[str, int]) -> float:
    ran = counts["tests"] - counts["skipped"]
    return counts["passed"] / ran if ran else 0.0


def report(modules: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    options = {k: getattr(args, k) for k in ("stdlib", "memory_as_file", "timeout")}
    columns = ("tests", *OUTCOMES)
    totals = {c: sum(m["counts"][c] for m in modules.values()) for c in columns}
    print(f"{'module':<20}" + "".join(f"{c:>9}" for c in columns) + f"{'pass %':>9}")
    for name, m in [
        *((n.rsplit(".", 1)[1], m) for n, m in modules.items()),
        ("TOTAL", {"counts": totals}),
    ]:
        c = m["counts"]
        print(f"{name:<20}" + "".join(f"{c[k]:>9}" for k in columns) + f"{pass_rate(c):>9.1%}")
    print(
        f"\npass rate: {totals['passed']}/{totals['tests'] - totals['skipped']}"
        f" = {pass_rate(totals):.1%} (passed / (tests - skipped))"
    )
    borrowed = sorted({n for m in modules.values() for n in m["borrowed"]})
    if borrowed:
        print("borrowed from the stdlib while importing the tests: " + ", ".join(borrowed))
    failures = [
        t for m in modules.values() for t in m["tests"] if t["outcome"] in ("failed", "errors")
    ]
    if args.failures:
        print()
        for t in failures:
            print(f"{'FAIL' if t['outcome'] == 'failed' else 'ERROR'} {t['id']}: {t['message']}")
    return {
        "python": sys.version,
        "options": options,
        "totals": totals,
        "pass_rate": pass_rate(totals),
        "borrowed": borrowed,
        "failures": failures,
        "modules": modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", action="store_true", help="list failing tests")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write all results here")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per test")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="workers")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stdlib", action="store_true", help="baseline: test the stdlib module")
    mode.add_argument("--memory-as-file", action="store_true", help="a file for each :memory:")
    parser.add_argument("--worker", metavar="MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.events, args)
        return
    names = test_modules()
    with tempfile.TemporaryDirectory(prefix="cpython_sqlite3-") as tmp:
        swap.write_shim(Path(tmp) / "shim", swap=True)
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            runs = pool.map(lambda m: run_module(m, Path(tmp), args), names)
            modules = dict(zip(names, runs, strict=True))
    summary = report(modules, args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
