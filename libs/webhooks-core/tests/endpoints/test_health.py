"""The breaker and health reading, as pure functions (no database)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from webhooks_core.endpoints.health import (
    endpoint_condition,
    is_half_open,
    is_open,
    trips_breaker,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
THRESHOLD = 5
WINDOW = 3600.0


@dataclass
class Columns:
    enabled: bool = True
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    circuit_open_until: datetime | None = None


def state(columns: Columns) -> str:
    return endpoint_condition(
        columns, threshold=THRESHOLD, auto_disable_after_seconds=WINDOW, now=NOW
    ).state


LATER = NOW + timedelta(seconds=30)
EARLIER = NOW - timedelta(seconds=30)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (Columns(), "healthy"),
        (Columns(consecutive_failures=1, failing_since=EARLIER), "failing"),
        (Columns(failing_since=EARLIER), "failing"),
        (Columns(consecutive_failures=5, failing_since=EARLIER, circuit_open_until=LATER), "open"),
        (
            Columns(consecutive_failures=5, failing_since=EARLIER, circuit_open_until=EARLIER),
            "half_open",
        ),
        # The rest is over exactly now: half open (the scheduler may probe now).
        (Columns(consecutive_failures=6, circuit_open_until=NOW), "half_open"),
        # A stale rest under the threshold (a success reset the count): failing, not half open.
        (Columns(consecutive_failures=2, circuit_open_until=EARLIER), "failing"),
        (Columns(enabled=False, consecutive_failures=9, circuit_open_until=LATER), "disabled"),
    ],
)
def test_states(columns: Columns, expected: str) -> None:
    assert state(columns) == expected


def test_breaker_predicates() -> None:
    assert is_open(LATER, NOW)
    assert not is_open(NOW, NOW)
    assert not is_open(None, NOW)
    assert trips_breaker(THRESHOLD, THRESHOLD)
    assert not trips_breaker(THRESHOLD - 1, THRESHOLD)
    assert is_half_open(THRESHOLD, EARLIER, THRESHOLD, NOW)
    assert not is_half_open(THRESHOLD, LATER, THRESHOLD, NOW)  # still resting: open
    assert not is_half_open(THRESHOLD, None, THRESHOLD, NOW)  # never opened
    assert not is_half_open(THRESHOLD - 1, EARLIER, THRESHOLD, NOW)


def test_moments_that_go_with_the_state() -> None:
    open_one = endpoint_condition(
        Columns(consecutive_failures=5, failing_since=EARLIER, circuit_open_until=LATER),
        threshold=THRESHOLD,
        auto_disable_after_seconds=WINDOW,
        now=NOW,
    )
    assert open_one.circuit_open_until == LATER
    assert open_one.auto_disable_at == EARLIER + timedelta(seconds=WINDOW)
    assert open_one.label == "breaker open"
    half = endpoint_condition(
        Columns(consecutive_failures=5, circuit_open_until=EARLIER),
        threshold=THRESHOLD,
        auto_disable_after_seconds=WINDOW,
        now=NOW,
    )
    assert half.circuit_open_until is None  # only an open breaker says until when
    assert half.auto_disable_at is None  # no failing_since: no countdown
    assert half.label == "half open"
    disabled = endpoint_condition(
        Columns(enabled=False, consecutive_failures=3, failing_since=EARLIER),
        threshold=THRESHOLD,
        auto_disable_after_seconds=WINDOW,
        now=NOW,
    )
    assert disabled.auto_disable_at is None
    assert disabled.consecutive_failures == 3
