"""Request and response models of the delivery query, replay and dead-letter routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from registration.api.schemas import (
    ChannelName,
    EventTypeName,
    ListQuery,
    ListResponse,
    Out,
    Strict,
)
from registration.services.deliveries import PAYLOAD_FIELD_PATTERN
from webhooks_core.json_input import Timestamp

DELIVERY_STATES = r"^(pending|sending|retrying|delivered|dead|cancelled)$"
OUTCOMES = (
    r"^(success|http_3xx|http_4xx|http_5xx|timeout|connect_error|blocked|too_large|auth_error"
    r"|error)$"
)
BIGINT_MAX = 2**63 - 1  # ids are PostgreSQL bigint
EVENT_ID = r"^[A-Za-z0-9_\-.:]{1,128}$"


class TimeWindow(BaseModel):
    """``since`` (inclusive) and ``until`` (exclusive), ISO-8601 (UTC when no offset is given)."""

    since: Timestamp | None = None
    until: Timestamp | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.since and self.until and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


# Paths ---------------------------------------------------------------------------------


class AppPath(BaseModel):
    app_id: uuid.UUID


class MessagePath(BaseModel):
    app_id: uuid.UUID
    event_id: str = Field(pattern=EVENT_ID)


class DeliveryPath(BaseModel):
    app_id: uuid.UUID
    delivery_id: int = Field(ge=1, le=BIGINT_MAX)


class EndpointRecoverPath(BaseModel):
    app_id: uuid.UUID
    endpoint_id: uuid.UUID


class DeadLetterPath(BaseModel):
    app_id: uuid.UUID
    dead_letter_id: int = Field(ge=1, le=BIGINT_MAX)


# Queries -------------------------------------------------------------------------------


class MessageQuery(ListQuery, TimeWindow):
    event_type: EventTypeName | None = None


class DeliveryQuery(ListQuery, TimeWindow):
    endpoint_id: uuid.UUID | None = None
    state: str | None = Field(default=None, pattern=DELIVERY_STATES)
    event_type: EventTypeName | None = None
    event_id: str | None = Field(default=None, pattern=EVENT_ID)
    status_code: int | None = Field(
        default=None, ge=100, le=599, description="the last attempt's HTTP status code"
    )
    channel: ChannelName | None = Field(default=None, description="one of the message's channels")
    payload_field: str | None = Field(
        default=None,
        max_length=256,
        pattern=PAYLOAD_FIELD_PATTERN,
        description="a dotted path into the message's data, e.g. data.person.id (with"
        " payload_value: deliveries whose message has that value there)",
    )
    payload_value: str | None = Field(
        default=None,
        max_length=1024,
        description='the value at payload_field: JSON when it parses (42, true, "42"),'
        " else a string",
    )

    @model_validator(mode="after")
    def _field_and_value(self) -> DeliveryQuery:
        if (self.payload_field is None) != (self.payload_value is None):
            raise ValueError("payload_field and payload_value go together")
        return self


class AdminDeliveryQuery(DeliveryQuery):
    application_id: uuid.UUID | None = None


class UndeliveredQuery(ListQuery):
    endpoint_id: uuid.UUID | None = None


class AdminUndeliveredQuery(UndeliveredQuery):
    application_id: uuid.UUID | None = None


class AttemptQuery(ListQuery, TimeWindow):
    endpoint_id: uuid.UUID | None = None
    outcome: str | None = Field(default=None, pattern=OUTCOMES)
    status_code: int | None = Field(default=None, ge=100, le=599, description="HTTP status")
    event_type: EventTypeName | None = None


class DeliveryAttemptQuery(ListQuery):
    pass


class DeadLetterQuery(ListQuery, TimeWindow):
    endpoint_id: uuid.UUID | None = None
    event_type: EventTypeName | None = None
    include_redriven: bool = False


class AdminDeadLetterQuery(DeadLetterQuery):
    application_id: uuid.UUID | None = None


class ReplayQuery(ListQuery):
    pass


# Bodies --------------------------------------------------------------------------------


class RecoverIn(Strict, TimeWindow):
    """Resend every failed (dead or retrying) delivery created since ``since``."""

    since: Timestamp
    include_cancelled: bool = Field(
        default=False,
        description="also resend the deliveries that were cancelled (the endpoint was"
        " disabled, or answered 410) in the window; the endpoint must be enabled again",
    )


class RedriveIn(Strict, TimeWindow):
    """Which open dead letters to redrive; an empty body redrives all of them."""

    endpoint_id: uuid.UUID | None = None
    event_type: EventTypeName | None = None


class AdminRedriveIn(RedriveIn):
    application_id: uuid.UUID | None = None


# Responses -----------------------------------------------------------------------------


class MessageOut(Out):
    id: str = Field(validation_alias="event_id", description="the webhook-id")
    application_id: uuid.UUID | None
    event_type: str
    payload: dict[str, Any]
    channels: list[str] | None
    ordering_key: str | None = Field(
        default=None, description="messages with the same key go to each endpoint in order"
    )
    occurred_at: datetime
    source: str
    created_at: datetime
    payload_dropped_at: datetime | None = Field(
        description="set when retention replaced the payload by {} (docs/retention.md)"
    )


class MessageList(ListResponse[MessageOut]):
    pass


class DeliveryOut(Out):
    id: int
    event_id: str = Field(description="the message's webhook-id")
    endpoint_id: uuid.UUID
    endpoint_url: str = Field(
        description="where it goes: also for a relay delivery or a deleted endpoint"
    )
    application_id: uuid.UUID
    event_type: str
    ordering_key: str | None = Field(default=None, description="the message's ordering key")
    state: str
    attempt_count: int = Field(description="attempts since the delivery was created or replayed")
    next_attempt_at: datetime | None = Field(
        description="when it is due; null once it ended, and for a pending or retrying one"
        " that waits behind an earlier open delivery of its ordering key (parked)"
    )
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UndeliveredOut(DeliveryOut):
    age_seconds: float = Field(description="seconds since the delivery was created")


class DeliveryList(ListResponse[DeliveryOut]):
    pass


class UndeliveredList(ListResponse[UndeliveredOut]):
    pass


class MessageDetail(MessageOut):
    deliveries: list[DeliveryOut]


class AttemptOut(Out):
    id: int
    delivery_id: int
    endpoint_id: uuid.UUID
    started_at: datetime
    latency_ms: float
    status_code: int | None
    outcome: str
    error: str | None
    response_body: str | None = Field(description="the first KiB of the response body")
    trigger: str


class AttemptList(ListResponse[AttemptOut]):
    pass


class DeadLetterOut(Out):
    id: int
    delivery_id: int
    event_id: str
    event_type: str
    endpoint_id: uuid.UUID
    endpoint_url: str = Field(description="where the delivery went")
    application_id: uuid.UUID
    attempt_count: int
    reason: str
    created_at: datetime
    redriven_at: datetime | None


class DeadLetterList(ListResponse[DeadLetterOut]):
    pass


class ReplayOut(Out):
    id: uuid.UUID
    application_id: uuid.UUID | None
    kind: str
    criteria: dict[str, Any]
    requested_by: str
    deliveries_requeued: int = Field(
        description="0 when everything asked for was already pending or sending"
    )
    created_at: datetime


class ReplayList(ListResponse[ReplayOut]):
    pass


class WaitingKeyOut(Out):
    ordering_key: str
    head_delivery_id: int = Field(description="the key's oldest open delivery")
    head_state: str = Field(description="retrying (waits for its retry) or pending (blocked)")
    next_attempt_at: datetime | None
    attempt_count: int
    last_error: str | None
    blocked_by: int | None = Field(
        description="under the block policy: the dead delivery that holds the key until redriven"
    )
    open_deliveries: int = Field(description="the key's open deliveries, its head included")


class WaitingKeysOut(Out):
    keys_waiting: int = Field(description="keys whose head is retrying or blocked")
    keys: list[WaitingKeyOut] = Field(description="the first 100, the longest waiting first")
