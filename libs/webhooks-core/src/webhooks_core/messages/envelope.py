"""The event envelope that travels from producers through RabbitMQ into the platform.

``{"id", "type", "timestamp", "data"}`` plus optional ``channels``, ``application`` and
``ordering_key``.  The id
is chosen by the producer once and becomes the ``webhook-id`` receivers deduplicate on; the
platform stores each id once.  What an endpoint receives is :meth:`Envelope.webhook_body`:
``{"type", "timestamp", "data"}`` as the delivery contract says.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from webhooks_core.deliveries.ordering import check_ordering_key
from webhooks_core.ids import new_message_id

EVENT_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9][a-z0-9_\-]*)+$"
CHANNEL_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One event as producers publish it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_message_id, min_length=1, max_length=128)
    type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=128)
    timestamp: datetime = Field(default_factory=utcnow)
    data: dict[str, Any]
    channels: list[str] | None = Field(default=None, max_length=10)
    application: str | None = Field(default=None, max_length=64)
    # Deliveries of one endpoint with the same key go in order (deliveries.ordering).
    ordering_key: str | None = None

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # In UTC: PostgreSQL refuses offsets of 16 hours and more, which ISO 8601 allows.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:  # year 1 east of UTC, year 9999 west of it
            raise ValueError("the timestamp is out of range once in UTC") from None

    @field_validator("ordering_key")
    @classmethod
    def _ordering_key(cls, value: str | None) -> str | None:
        return None if value is None else check_ordering_key(value)

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for channel in value:
            if not re.match(CHANNEL_PATTERN, channel):
                raise ValueError(f"invalid channel name {channel!r}")
        return sorted(set(value)) or None

    def to_json(self) -> bytes:
        """The wire form published to RabbitMQ."""
        return self.model_dump_json(exclude_none=True).encode()

    def webhook_body(self) -> bytes:
        """The JSON body an endpoint receives."""
        return webhook_body(self.type, self.timestamp, self.data)


def webhook_body(event_type: str, timestamp: datetime, data: dict[str, Any]) -> bytes:
    """Serialize ``{"type", "timestamp", "data"}`` compactly, with an ISO-8601 UTC timestamp."""
    stamp = timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": event_type, "timestamp": stamp, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
