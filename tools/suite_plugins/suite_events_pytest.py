"""pytest plugin (``-p suite_events_pytest``): each test's outcome to the events file.

A test's outcome is decided over its three phases: a failed setup or teardown makes it an
error, a skip in any phase (and an expected failure) makes it skipped, else the call decides.
"""

from __future__ import annotations

from typing import Any

import pytest
import suite_events

_outcomes: dict[str, tuple[str, str, str]] = {}


def _message(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    if isinstance(report.longrepr, tuple):  # (path, line, reason) of a skip
        return str(report.longrepr[2])
    lines = report.longreprtext.strip().splitlines()
    return lines[-1] if lines else ""


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    suite_events.emit("start", nodeid)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    nodeid = report.nodeid
    previous = _outcomes.get(nodeid, ("passed", "", ""))
    if hasattr(report, "wasxfail"):
        outcome = "skipped" if report.skipped else "passed"  # an unexpected pass stays one
        current = (outcome, f"xfail: {report.wasxfail}", "")
    elif report.skipped:
        current = ("skipped", _message(report), "")
    elif report.failed:
        kind = "failed" if report.when == "call" else "errors"
        current = (kind, _message(report), report.longreprtext)
    else:
        current = ("passed", "", "")
    if previous[0] == "passed":  # the first phase that did not pass decides
        _outcomes[nodeid] = current
    if report.when == "teardown":
        suite_events.end(nodeid, *_outcomes.pop(nodeid))
