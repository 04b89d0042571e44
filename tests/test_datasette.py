"""Datasette, a stock reader over HTTP, serves a database while sqlite_concurrent processes
write it, and shows every row they commit."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import SPAWN, integrity_ok, program_or_skip
from workers import ingest

import sqlite_concurrent

WRITERS = 3
ROWS = 150


def _datasette() -> str:
    return program_or_skip("datasette", "pip install 'sqlite-concurrent[datasette]'")


class _Server:
    """``datasette serve`` on a port the OS picks; the port is read from its log."""

    def __init__(self, binary: str, db_path: str) -> None:
        self.proc = subprocess.Popen(
            [binary, "serve", db_path, "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        self._port: queue.Queue[int | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                self._port.put(int(found.group(1)))
        self._port.put(None)

    def url(self, timeout: float) -> str:
        port = self._port.get(timeout=timeout)
        assert port is not None, "datasette exited:\n" + "".join(self.log)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _wait_until_answering(base: str, timeout: float) -> None:
    """Bounded poll: the log line comes as uvicorn binds, the first answer may come after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(f"{base}/-/versions.json")
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _rows(base: str) -> list[tuple[int, int]]:
    page = _get(f"{base}/app/events.json?_shape=array&_size=max&_sort=id")
    return [(row["writer"], row["seq"]) for row in page]


@pytest.mark.timeout(60)
def test_datasette_serves_rows_while_writers_commit(db_path):
    binary = _datasette()
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, writer INTEGER, seq INTEGER)")
    conn.commit()
    conn.close()
    server = _Server(binary, db_path)
    try:
        base = server.url(timeout=30)
        _wait_until_answering(base, timeout=30)
        assert _rows(base) == []

        start, results = SPAWN.Event(), SPAWN.Queue()
        procs = [
            SPAWN.Process(target=ingest, args=(start, results, db_path, w, ROWS, 0.002, False))
            for w in range(WRITERS)
        ]
        for p in procs:
            p.start()
        start.set()
        seen = []
        while any(p.is_alive() for p in procs):
            seen.append(len(_rows(base)))
        done = sorted(results.get(timeout=50) for _ in procs)
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
        assert [writer for writer, _ in done] == list(range(WRITERS))
        # Each reader request sees a committed state: the count never goes back.
        assert seen == sorted(seen), seen
        assert any(0 < n < WRITERS * ROWS for n in seen), seen  # it served during the writes

        final = _rows(base)
        assert sorted(final) == [(w, s) for w in range(WRITERS) for s in range(ROWS)]
        count = _get(f"{base}/app.json?sql=select+count(*)+as+n+from+events&_shape=array")
        assert count == [{"n": WRITERS * ROWS}]
    finally:
        server.stop()
    assert integrity_ok(db_path)
