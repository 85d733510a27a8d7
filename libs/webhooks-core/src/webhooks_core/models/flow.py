"""What the delivery engine learned about how much an endpoint takes: its adaptive limits
(:mod:`webhooks_core.endpoints.flow`) and the global token bucket of its rate.

No row means nothing was learned: the endpoint runs at its configured ``max_in_flight`` and
``rate_limit``.  Both tables go with their endpoint.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Double, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from webhooks_core.models.base import Base


class EndpointFlow(Base):
    """An endpoint's adaptive limits, written by the workers as they record batches."""

    __tablename__ = "endpoint_flow"
    __table_args__ = (
        # The claim reads the endpoints held back by a Retry-After on every cycle.
        Index(
            "ix_endpoint_flow_throttled_until",
            "throttled_until",
            postgresql_where=text("throttled_until IS NOT NULL"),
        ),
    )

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    max_in_flight: Mapped[float | None] = mapped_column(
        Double, comment="adaptive batches in flight; null: the configured maximum"
    )
    rate_limit: Mapped[float | None] = mapped_column(
        Double, comment="adaptive deliveries per second; null: the configured rate (or none)"
    )
    rate_step: Mapped[float | None] = mapped_column(
        Double, comment="deliveries per second the rate regains per second"
    )
    throttled_until: Mapped[datetime | None] = mapped_column(
        comment="a Retry-After holds the whole endpoint until then"
    )
    reason: Mapped[str | None] = mapped_column(Text, comment="what lowered the limits last")
    latency_ms: Mapped[float | None] = mapped_column(Double, comment="latency baseline")
    decreased_at: Mapped[datetime | None]
    changed_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class EndpointRateBucket(Base):
    """The token bucket of an endpoint's rate, shared by every scheduler: the claim (one at
    a time, under its advisory lock) reads and spends it in its own transaction."""

    __tablename__ = "endpoint_rate_buckets"

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    tokens: Mapped[float] = mapped_column(Double)
    stamp: Mapped[datetime]
