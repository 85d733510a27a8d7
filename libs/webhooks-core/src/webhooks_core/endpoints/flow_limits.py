"""Which limits apply to an endpoint now, and whether flow control is on for it.

The limits in effect are the configured ones (``max_in_flight``, else the default;
``rate_limit``, else none) within what flow control learnt (``endpoint_flow``, written by
:func:`webhooks_core.endpoints.flow.adapt`): as code for the worker, the API and the console
(:func:`effective_in_flight`, :func:`effective_rate`, :func:`flow_reading`) and as SQL for
the claim and the gauges (:func:`effective_in_flight_sql`, :func:`effective_rate_sql`,
:data:`THROTTLED_SQL`).  Whether flow control is on for an endpoint is decided here only:
:func:`flow_control_on`, and :data:`FLOW_ON_SQL` for the statements that join
``endpoint_flow``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


def effective_in_flight_sql(configured: str) -> str:
    """:func:`effective_in_flight` in SQL over an ``endpoint_flow f`` row (NULL when the
    endpoint has none), ``configured`` being the SQL of the configured limit."""
    return (
        f"CAST(greatest(1, least({configured}, floor(coalesce(f.max_in_flight, {configured}))))"
        " AS int)"
    )


def effective_rate_sql(configured: str, adaptive: str) -> str:
    """:func:`effective_rate` in SQL (NULL: no limit)."""
    return (
        f"CASE WHEN {adaptive} IS NULL THEN CAST({configured} AS float8)"
        f" WHEN {configured} IS NULL THEN {adaptive} ELSE least({configured}, {adaptive}) END"
    )


# The claim's condition for "a Retry-After holds this endpoint" over an ``endpoint_flow f``.
THROTTLED_SQL = "f.throttled_until > :now"


def flow_control_on(adaptive_flow: bool, platform: bool = True) -> bool:
    """Whether flow control adapts an endpoint's limits: its own ``adaptive_flow`` switch and
    the platform's ``WEBHOOKS_FLOW_CONTROL`` (a delivery setting; the API asks with the
    endpoint's alone).  Off, nothing is learnt from the endpoint's answers, its stored state
    is not used, and a 429 counts as a failure for its breaker as any other answer does."""
    return adaptive_flow and platform


# The endpoint's switch in SQL, over an ``endpoints e`` row: the claim, the worker's batch
# and the gauges join ``endpoint_flow f`` on it (an opted-out endpoint's stored state reads
# as none), the worker writes a row only under it.  The platform's switch is the worker's
# (it stops the learning) and the scheduler's, which forgets what was learnt when it starts
# with it off (docs/delivery.md).
FLOW_ON_SQL = "e.adaptive_flow"


def effective_in_flight(configured: int, adaptive: float | None) -> int:
    """Batches an endpoint may have in flight: the adaptive limit within the configured."""
    if adaptive is None:
        return configured
    return max(min(configured, math.floor(adaptive)), 1)


def effective_rate(configured: int | None, adaptive: float | None) -> float | None:
    """Deliveries per second an endpoint may be sent (None: no limit)."""
    if adaptive is None:
        return float(configured) if configured else None
    return min(float(configured), adaptive) if configured else adaptive


class FlowColumns(Protocol):
    """The ``endpoint_flow`` columns a reading needs (an ``EndpointFlow`` row has them)."""

    @property
    def max_in_flight(self) -> float | None: ...

    @property
    def rate_limit(self) -> float | None: ...

    @property
    def throttled_until(self) -> datetime | None: ...

    @property
    def reason(self) -> str | None: ...


@dataclass(frozen=True)
class FlowReading:
    """An endpoint's current limits, as the API, the console and the metrics show them.

    ``max_in_flight``: batches in flight now allowed (None: the configured value, or the
    default when none is configured); ``rate_limit``: deliveries per second now allowed
    (None: no limit); ``adapted``: below the configured maximum because of what the
    receiver answered (``reason``: ``429``, ``503``, ``timeout``, ``latency`` or
    ``retry-after``); ``throttled_until``: a ``Retry-After`` holds every delivery until then.
    """

    max_in_flight: int | None
    rate_limit: float | None
    throttled_until: datetime | None
    reason: str | None
    adapted: bool


def flow_reading(
    configured_in_flight: int | None,
    configured_rate: int | None,
    flow: FlowColumns | None,
    now: datetime,
) -> FlowReading:
    """Read an endpoint's current limits (the adaptive ones are never above the configured
    ones, which bound them when they are computed)."""
    adaptive_in_flight = flow.max_in_flight if flow is not None else None
    adaptive_rate = flow.rate_limit if flow is not None else None
    until = flow.throttled_until if flow is not None else None
    held = until is not None and until > now
    in_flight = configured_in_flight
    if adaptive_in_flight is not None:
        floor = max(math.floor(adaptive_in_flight), 1)
        in_flight = min(configured_in_flight, floor) if configured_in_flight else floor
    rate = effective_rate(configured_rate, adaptive_rate)
    adapted = held or adaptive_in_flight is not None or adaptive_rate is not None
    return FlowReading(
        in_flight,
        None if rate is None else round(rate, 2),
        until if held else None,
        flow.reason if flow is not None and adapted else None,
        adapted,
    )
