"""What one batch of deliveries is made of: the runtime it runs with, the rows it took, the
changes it makes, and the report it gives back.  Shared by the take, the sending and the
recording (:mod:`delivery.engine` ties them together)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from delivery.clock import Clock
from delivery.config import DeliverySettings
from delivery.oauth import OAuthCredentials
from delivery.sender import Sender
from delivery.tls import TLSCredentials
from webhooks_core.endpoints.flow import FlowState


class DeadLetterPublisher(Protocol):
    """Publishes dead-lettered deliveries for operators (the ``webhooks.dead-letters`` queue)."""

    def publish(self, records: list[dict[str, Any]]) -> None:
        """Publish each record persistently; raise if the broker did not take one."""
        ...


@dataclass(frozen=True)
class DeliveryRuntime:
    """What delivering needs, built once per worker process."""

    settings: DeliverySettings
    engine: Engine
    sender: Sender
    clock: Clock
    dead_letters: DeadLetterPublisher


@dataclass
class BatchReport:
    """What one batch did, for the task's log line and for tests."""

    taken: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    cancelled: int = 0
    released: int = 0
    outcomes: list[str] = field(default_factory=list)


@dataclass
class Leased:
    """A leased delivery with its message; ``problem`` says why no request can be built."""

    id: int
    endpoint_id: uuid.UUID
    attempt_count: int
    next_trigger: str | None
    lease_expires_at: datetime
    event_id: str
    event_type: str
    occurred_at: datetime | None
    payload: Any
    accepted_at: datetime | None
    problem: str | None = None
    ordering_key: str | None = None


@dataclass
class BatchEndpoint:
    id: uuid.UUID
    application_id: uuid.UUID
    url: str
    headers: dict[str, str]
    active: bool
    retry_schedule: list[int] | None
    consecutive_failures: int
    failing_since: datetime | None
    circuit_open_until: datetime | None
    last_success_at: datetime | None
    keys: list[bytes]  # v1 (HMAC) keys
    problem: str | None = None  # why none of its requests can be built
    ed25519_keys: list[Ed25519PrivateKey] = field(default_factory=list)  # v1a keys
    oauth: OAuthCredentials | None = None  # delivery.credentials sends when either is set
    tls: TLSCredentials | None = None
    # The configured limits and what the engine learned (webhooks_core.endpoints.flow;
    # nothing while ``adaptive_flow`` is off).
    max_in_flight: int | None = None
    rate_limit: int | None = None
    adaptive_flow: bool = True
    flow: FlowState = field(default_factory=FlowState)
    bucket_tokens: float | None = None  # left in its rate bucket by the last claim


@dataclass
class Change:
    """The new state of one delivery; ``attempted_at`` is None when no request was sent."""

    id: int
    state: str
    attempt_count: int
    next_attempt_at: datetime | None = None
    attempted_at: datetime | None = None
    status_code: int | None = None
    error: str | None = None
