"""The clock of scheduling decisions: when an attempt is due, when a lease or breaker ends.

Production uses the system clock.  Tests set ``WEBHOOKS_CLOCK_OFFSET_FILE`` to a file holding
a number of seconds that every process (scheduler, workers, the test itself) adds to the wall
clock, so a test can jump hours ahead and watch a retry become due without sleeping.

The ``webhook-timestamp`` header is not a scheduling decision: it always carries the real time,
because receivers compare it with their own clocks.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from webhooks_core.settings import Settings


class Clock(Protocol):
    """Tells the time that scheduling decisions are made against."""

    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        return datetime.now(UTC)


class OffsetClock:
    """The wall clock plus an offset read from a file that tests move forward."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def offset(self) -> float:
        """Seconds added to the wall clock; a missing or empty file means none."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0.0
        return float(text) if text else 0.0

    def now(self) -> datetime:
        """The wall clock moved by the file's offset."""
        return datetime.now(UTC) + timedelta(seconds=self.offset())

    def advance(self, seconds: float) -> None:
        """Move every process's clock forward (written atomically, read on every call)."""
        staged = self.path.with_suffix(".tmp")
        staged.write_text(repr(self.offset() + seconds))
        staged.replace(self.path)


def make_clock(settings: Settings) -> Clock:
    """The clock the settings ask for."""
    if settings.clock_offset_file:
        return OffsetClock(settings.clock_offset_file)
    return SystemClock()
