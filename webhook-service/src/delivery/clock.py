"""The clock of scheduling decisions: when an attempt is due, when a lease or breaker ends.

Production uses the system clock.  The processes that tests start use the offset clock of
:mod:`delivery.testing` instead, so a test can jump hours ahead and watch a retry become due
without sleeping.

The ``webhook-timestamp`` header is not a scheduling decision: it always carries the real time,
because receivers compare it with their own clocks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


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
