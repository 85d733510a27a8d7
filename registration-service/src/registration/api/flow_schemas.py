"""An endpoint's current limits in the API (webhooks_core.endpoints.flow)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import inspect

from webhooks_core.endpoints.flow_limits import flow_control_on, flow_reading
from webhooks_core.messages.envelope import utcnow


class EndpointFlowOut(BaseModel):
    """What flow control allows the endpoint now (docs/delivery.md, *Flow control*)."""

    max_in_flight: int | None = Field(
        description="batches in flight allowed now; null: the configured max_in_flight (or"
        " the platform default when none is configured)"
    )
    rate_limit: float | None = Field(
        description="deliveries per second allowed now; null: no limit"
    )
    throttled_until: datetime | None = Field(
        description="set while a Retry-After holds every delivery of the endpoint"
    )
    reason: Literal["429", "503", "timeout", "latency", "retry-after"] | None = Field(
        description="what lowered the limits last, while they are below the configured ones"
    )
    adapted: bool = Field(
        description="true while the limits are below the configured ones because of what the"
        " receiver answered (they grow back as it answers well)"
    )


def flow_view(endpoint: Any) -> EndpointFlowOut:
    """The current limits of an endpoint row (its ``flow_state`` as loaded with it, never a lazy
    load: a row made by this request has learnt nothing yet)."""
    state = inspect(endpoint, raiseerr=False)
    loaded = state is None or "flow_state" not in state.unloaded
    flow = getattr(endpoint, "flow_state", None) if loaded else None
    if not flow_control_on(endpoint.adaptive_flow):
        flow = None  # opted out: its configured limits, whatever may be stored
    reading = flow_reading(endpoint.max_in_flight, endpoint.rate_limit, flow, utcnow())
    return EndpointFlowOut(
        max_in_flight=reading.max_in_flight,
        rate_limit=reading.rate_limit,
        throttled_until=reading.throttled_until,
        reason=reading.reason,
        adapted=reading.adapted,
    )
