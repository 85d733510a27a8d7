"""Request and response models of the statistics routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from registration.api.schemas import Out, Strict


class StatisticsQuery(Strict):
    window: Literal["1h", "24h", "7d"] = Field(
        default="24h", description="how far back: the last hour, day or 7 days"
    )
    bucket: Literal["minute", "hour", "day"] | None = Field(
        default=None,
        description="length of each point of the series; by default minute for 1h, hour for"
        " 24h, day for 7d (minute buckets over 7 days are refused)",
    )


class LatencyOut(BaseModel):
    mean: float | None = Field(description="mean latency of the attempts, ms")
    p50: float | None = Field(
        description="median, ms: the upper bound of its histogram bucket (5, 10, 25, 50,"
        " 100, 250, 500 ms, 1, 2.5, 5, 10, 30 s)"
    )
    p90: float | None = Field(description="90th percentile, ms, to a histogram bucket")
    p99: float | None = Field(description="99th percentile, ms, to a histogram bucket")


class SummaryOut(BaseModel):
    messages_accepted: int | None = Field(
        description="messages stored for the application (the service: all of them); null"
        " for an endpoint"
    )
    attempts: int = Field(description="HTTP attempts made")
    attempts_by_outcome: dict[str, int] = Field(
        description="attempts per outcome: success, http_5xx, timeout, connect_error, ..."
    )
    attempts_by_status_class: dict[str, int] = Field(
        description="attempts per answer class: 2xx, 3xx, 4xx, 5xx, or none (no answer)"
    )
    deliveries_by_final_state: dict[str, int] = Field(
        description="deliveries that reached delivered, dead or cancelled by an attempt"
    )
    retries_scheduled: int = Field(description="attempts that failed and left a retry due")
    dead_letters: int = Field(description="deliveries dead-lettered after their last attempt")
    success_rate: float | None = Field(description="2xx attempts / attempts; null: none")
    latency_ms: LatencyOut


class BucketOut(SummaryOut):
    start: datetime = Field(description="start of the bucket (UTC)")


class EventTypeVolumeOut(BaseModel):
    event_type: str
    messages: int = Field(description="messages accepted of this type (0 for an endpoint)")
    attempts: int


class StatisticsOut(Out):
    window: str
    bucket: str
    since: datetime = Field(description="start of the first bucket")
    until: datetime
    totals: SummaryOut
    series: list[BucketOut] = Field(description="one point per bucket, empty ones included")
    event_types: list[EventTypeVolumeOut]
