"""Test outcomes as JSON lines, written as each test ends, for ``tools/suites.py``.

The file is named by the ``SQLITE_CONCURRENT_SUITE_EVENTS`` environment variable.  A ``start``
line precedes each test and an ``end`` line follows it, so a run killed part-way still tells
which tests finished and which one it was in.  Outcomes: ``passed``, ``failed``, ``errors``
(outside the test body: setup, teardown, class fixtures) and ``skipped`` (expected failures
included).  Used by the pytest plugin and the Django runner beside this module.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from typing import Any, TextIO

EVENTS_VARIABLE = "SQLITE_CONCURRENT_SUITE_EVENTS"
TRACEBACK_CHARS = 3000

_lock = threading.Lock()
_out: TextIO | None = None


def emit(event: str, test_id: str, **fields: Any) -> None:
    global _out
    with _lock:
        if _out is None:
            # Append: a parallel runner's processes and a resumed run share the file.
            _out = open(os.environ[EVENTS_VARIABLE], "a", encoding="utf-8")  # noqa: SIM115
            atexit.register(_out.close)
        _out.write(json.dumps({"event": event, "id": test_id, **fields}) + "\n")
        _out.flush()


def end(test_id: str, outcome: str, message: str = "", traceback: str = "") -> None:
    fields: dict[str, Any] = {"outcome": outcome, "message": head(message)}
    if traceback:
        fields["traceback"] = traceback[-TRACEBACK_CHARS:]
    emit("end", test_id, **fields)


def head(text: str, lines: int = 8, chars: int = 800) -> str:
    """The start of a message: an assertion's explanation follows its first line."""
    kept = [line.rstrip() for line in str(text).strip().splitlines() if line.strip()]
    return "\n".join(kept[:lines])[:chars]
