"""Whether a process is still the one that wrote a record: a pid alone is not enough, as the
kernel reuses pids, so records of ours carry the process's start time beside its pid.

The lock database's holder rows and the journals' headers both identify their process this way;
this module sits below both so that neither has to import the other.
"""

from __future__ import annotations

import os
import sys


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), or ``None`` if it is gone.

    A zombie (killed, not yet waited for) counts as gone: it will never release anything.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    # The command name (field 2) may contain spaces or parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def holder_alive(pid: int, start_time: int) -> bool:
    """Whether ``pid`` is alive and still the process that started at ``start_time`` (0: not
    known, so any process with that pid counts)."""
    if sys.platform != "linux":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    now = process_start_time(pid)
    return now is not None and (now == start_time or now == 0 or start_time == 0)
