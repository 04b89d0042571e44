"""A Django test runner (``TEST_RUNNER = "suite_events_django.EventsRunner"``) writing each
test's outcome to the events file.

With ``--parallel`` the workers send their results to the parent, which replays them into this
result class, so every test is recorded once, by the parent.  A failing subtest fails its test.
"""

from __future__ import annotations

import os
import unittest
from typing import Any

import suite_events
from django.test.runner import DiscoverRunner
from django.test.utils import iter_test_cases

EXCLUDE_VARIABLE = "SQLITE_CONCURRENT_SUITE_EXCLUDE"  # test ids, separated by spaces


def _error(result: unittest.TestResult, test: Any, err: Any) -> tuple[str, str]:
    try:
        text = result._exc_info_to_string(err, test)  # type: ignore[attr-defined]
    except Exception:  # a replayed error may come without a usable traceback
        text = repr(err[1])
    message = f"{getattr(err[0], '__name__', err[0])}: {err[1]}"
    return message, text


class EventsResult(unittest.TextTestResult):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._current: dict[str, tuple[str, str, str]] = {}
        self._started: set[str] = set()

    def _record(self, test: Any, outcome: str, message: str = "", text: str = "") -> None:
        test_id = test.id()
        if test_id not in self._current or self._current[test_id][0] == "passed":
            self._current[test_id] = (outcome, message, text)
        if outcome != "passed" and test_id not in self._started:
            # setUpClass and friends fail outside any test.
            suite_events.end(test_id, *self._current.pop(test_id))

    def startTest(self, test: Any) -> None:  # noqa: N802 - unittest API
        super().startTest(test)
        self._started.add(test.id())
        suite_events.emit("start", test.id())

    def stopTest(self, test: Any) -> None:  # noqa: N802 - unittest API
        super().stopTest(test)
        test_id = test.id()
        self._started.discard(test_id)
        suite_events.end(test_id, *self._current.pop(test_id, ("passed", "", "")))

    def addError(self, test: Any, err: Any) -> None:  # noqa: N802 - unittest API
        super().addError(test, err)
        self._record(test, "errors", *_error(self, test, err))

    def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802 - unittest API
        super().addFailure(test, err)
        self._record(test, "failed", *_error(self, test, err))

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802 - unittest API
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record(test, "failed" if failed else "errors", *_error(self, test, err))

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802 - unittest API
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802 - unittest API
        super().addExpectedFailure(test, err)
        self._record(test, "skipped", "expected failure")

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802 - unittest API
        super().addUnexpectedSuccess(test)
        self._record(test, "failed", "unexpected success")


class EventsRunner(DiscoverRunner):
    """Django's runner, recording outcomes, less the tests named in ``EXCLUDE_VARIABLE``."""

    def get_resultclass(self) -> Any:
        return EventsResult

    def load_tests_for_label(self, label: str, discover_kwargs: Any) -> Any:
        tests = super().load_tests_for_label(label, discover_kwargs)
        excluded = set(os.environ.get(EXCLUDE_VARIABLE, "").split())
        return unittest.TestSuite(t for t in iter_test_cases(tests) if t.id() not in excluded)
