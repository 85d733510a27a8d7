"""What an endpoint's health columns mean: the one breaker reading of API, console, metrics
and scheduler.

The delivery engine keeps ``consecutive_failures``, ``failing_since`` and
``circuit_open_until`` on each endpoint.  Read together with the settings they say:

* ``disabled``: the endpoint is disabled (by an operator, a 410 or the auto-disable window);
* ``open``: the breaker rests until ``circuit_open_until``; nothing is sent meanwhile;
* ``half_open``: the rest is over but the failures that opened it stand
  (``consecutive_failures >= circuit_breaker_threshold``): the next attempt is a single probe;
* ``failing``: the last attempts failed, fewer of them than the breaker's threshold;
* ``healthy``: the last attempt succeeded (or nothing was attempted yet).

The scheduler reads the same breaker: it skips an open endpoint and sends a half-open one a
single probe (:func:`is_half_open`); the engine opens the breaker when a batch's trailing
failures reach the threshold (:func:`trips_breaker`).

A failing endpoint that stays failing is disabled ``auto_disable_after_seconds`` after
``failing_since``: :attr:`EndpointCondition.auto_disable_at` is that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

HEALTH_STATES = ("healthy", "failing", "half_open", "open", "disabled")

# The same reading in SQL, for queries over many endpoints (the metrics gauges).  Bind
# ``:threshold``; ``now()`` is the transaction's clock.
HEALTH_STATE_SQL = """
    CASE
        WHEN NOT enabled THEN 'disabled'
        WHEN circuit_open_until > now() THEN 'open'
        WHEN circuit_open_until IS NOT NULL AND consecutive_failures >= :threshold
            THEN 'half_open'
        WHEN consecutive_failures > 0 OR failing_since IS NOT NULL THEN 'failing'
        ELSE 'healthy'
    END
"""


class HealthColumns(Protocol):
    """The endpoint columns the reading needs (an ``Endpoint`` row has them)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def consecutive_failures(self) -> int: ...

    @property
    def failing_since(self) -> datetime | None: ...

    @property
    def circuit_open_until(self) -> datetime | None: ...


@dataclass(frozen=True)
class EndpointCondition:
    """The health state of one endpoint now, with the moments that go with it."""

    state: str
    consecutive_failures: int
    # While the breaker rests: when the next (probe) attempt may go.
    circuit_open_until: datetime | None
    # While failing and enabled: when the endpoint is disabled if nothing succeeds before.
    auto_disable_at: datetime | None

    @property
    def label(self) -> str:
        """Words for people: ``breaker open``, ``half open``, ``failing``..."""
        return {"open": "breaker open", "half_open": "half open"}.get(self.state, self.state)


def is_half_open(
    consecutive_failures: int, circuit_open_until: datetime | None, threshold: int, now: datetime
) -> bool:
    """The breaker's rest is over, the failures that opened it stand: probe with one attempt."""
    return (
        circuit_open_until is not None
        and not is_open(circuit_open_until, now)
        and trips_breaker(consecutive_failures, threshold)
    )


def is_open(circuit_open_until: datetime | None, now: datetime) -> bool:
    """The breaker rests: nothing is sent to the endpoint before ``circuit_open_until``."""
    return circuit_open_until is not None and circuit_open_until > now


def trips_breaker(consecutive_failures: int, threshold: int) -> bool:
    """Failures in a row that open the breaker (again, after a failed probe)."""
    return consecutive_failures >= threshold


def endpoint_condition(
    endpoint: HealthColumns,
    *,
    threshold: int,
    auto_disable_after_seconds: float,
    now: datetime,
) -> EndpointCondition:
    """Read an endpoint's health columns (see the module docstring for the states)."""
    failures = endpoint.consecutive_failures or 0
    open_until = endpoint.circuit_open_until
    failing = failures > 0 or endpoint.failing_since is not None
    if not endpoint.enabled:
        state = "disabled"
    elif is_open(open_until, now):
        state = "open"
    elif is_half_open(failures, open_until, threshold, now):
        state = "half_open"
    elif failing:
        state = "failing"
    else:
        state = "healthy"
    auto_disable_at = None
    if endpoint.enabled and failing and endpoint.failing_since is not None:
        auto_disable_at = endpoint.failing_since + timedelta(seconds=auto_disable_after_seconds)
    return EndpointCondition(
        state=state,
        consecutive_failures=failures,
        circuit_open_until=open_until if state == "open" else None,
        auto_disable_at=auto_disable_at,
    )
