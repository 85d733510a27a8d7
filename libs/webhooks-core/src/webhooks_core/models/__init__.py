"""The platform's schema: one module per aggregate, one metadata, one migration history."""

from webhooks_core.models.application import ApiToken, Application
from webhooks_core.models.base import Base
from webhooks_core.models.delivery import (
    DUE_STATES,
    TERMINAL_STATES,
    Attempt,
    DeadLetter,
    Delivery,
    DeliveryLease,
    DeliveryState,
    Replay,
    cancel_open_deliveries,
)
from webhooks_core.models.endpoint import Endpoint, EndpointKind, EndpointSecret
from webhooks_core.models.event_type import EventType
from webhooks_core.models.flow import EndpointFlow, EndpointRateBucket
from webhooks_core.models.message import IdempotencyKey, Message
from webhooks_core.models.statistics import AttemptStat, MessageStat

__all__ = [
    "DUE_STATES",
    "TERMINAL_STATES",
    "ApiToken",
    "Application",
    "Attempt",
    "AttemptStat",
    "Base",
    "DeadLetter",
    "Delivery",
    "DeliveryLease",
    "DeliveryState",
    "Endpoint",
    "EndpointFlow",
    "EndpointKind",
    "EndpointRateBucket",
    "EndpointSecret",
    "EventType",
    "IdempotencyKey",
    "Message",
    "MessageStat",
    "Replay",
    "cancel_open_deliveries",
]
