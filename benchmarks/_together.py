"""Spawned writer processes that start on one signal and report over one queue: the harness the
multi-process benchmarks share."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

SPAWN = multiprocessing.get_context("spawn")


def run_together(
    target: Callable[..., None],
    args_list: Sequence[tuple[Any, ...]],
    *,
    timeout: float,
    settle: float = 0.0,
) -> list[Any]:
    """Start one process per ``args`` running ``target(*args, start, out)``, release them
    together, and return what each put on ``out`` (in order of arrival).

    :param timeout: how long to wait for each result.
    :param settle: seconds between starting the processes and releasing them, for writers that
        open their connections before waiting on ``start``.
    """
    start, out = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args, start, out)) for args in args_list]
    for p in procs:
        p.start()
    if settle:
        time.sleep(settle)
    start.set()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(60)
    return results
