"""The options of ``connect()`` that are ours, checked once (README, "connect() options")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .commit.checkpoint import DEFAULT_CHECKPOINT_WAIT, DEFAULT_WAL_LIMIT
from .engine import ways
from .errors import ProgrammingError
from .locking import levels, locks
from .locking.levels import Level


@dataclass(frozen=True)
class Options:
    timeout: float
    level: Level
    wal_limit: int
    checkpoint_wait: float
    escalate_at: int
    group_commit: bool | None
    row_lock_delay: float
    mode: str

    @classmethod
    def of(
        cls,
        *,
        timeout: Any = 30.0,
        lock_level: str = "row",
        wal_limit: int = DEFAULT_WAL_LIMIT,
        checkpoint_wait: float = DEFAULT_CHECKPOINT_WAIT,
        escalate_at: int = locks.DEFAULT_ESCALATE_AT,
        group_commit: bool | None = None,
        row_lock_delay: Any = locks.DEFAULT_ROW_LOCK_DELAY,
        mode: str | None = None,
    ) -> Options:
        """:raises ProgrammingError: an option is out of its range."""
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise ProgrammingError("timeout must be a non-negative number of seconds")
        if wal_limit <= 0 or checkpoint_wait < 0:
            raise ProgrammingError("wal_limit must be > 0 and checkpoint_wait >= 0")
        if escalate_at < 1:
            raise ProgrammingError("escalate_at must be >= 1")
        if not isinstance(row_lock_delay, (int, float)) or not 0 <= row_lock_delay <= 60:
            raise ProgrammingError("row_lock_delay must be a number of seconds from 0 to 60")
        try:
            level = levels.named(lock_level)
        except ValueError as e:
            raise ProgrammingError(str(e)) from None
        return cls(
            timeout=float(timeout),
            level=level,
            wal_limit=wal_limit,
            checkpoint_wait=checkpoint_wait,
            escalate_at=escalate_at,
            group_commit=group_commit,
            row_lock_delay=float(row_lock_delay),
            mode=ways.mode(mode),
        )
