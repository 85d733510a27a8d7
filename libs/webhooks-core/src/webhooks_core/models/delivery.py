"""Deliveries (message x endpoint), their attempts, dead letters and replays."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Double,
    ForeignKey,
    Identity,
    Index,
    Sequence,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from webhooks_core.deliveries.states import (
    ALL_SQL,
    DEAD_SQL,
    DUE_SQL,
    DUE_STATES,
    DUE_WITH_A_TIME_SQL,
    OPEN_SQL,
    OPEN_STATES,
    SENDING_SQL,
    TERMINAL_STATES,
    DeliveryState,
)
from webhooks_core.models.base import Base, created_at, updated_at

# The state machine lives in webhooks_core.deliveries.states; re-exported for the models' users.
__all__ = [
    "DUE_STATES",
    "TERMINAL_STATES",
    "Attempt",
    "DeadLetter",
    "Delivery",
    "DeliveryLease",
    "DeliveryState",
    "Replay",
    "cancel_open_deliveries",
]


# A partitioned table cannot have an identity column in PostgreSQL 15: a sequence it owns.
ATTEMPT_IDS = Sequence("attempts_id_seq")


class Delivery(Base):
    """One message for one endpoint; exists once per pair, which makes fan-out idempotent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "endpoint_id", name="uq_deliveries_message_endpoint"),
        # Due with a time (not parked), by application: the claim reads each application's
        # oldest due rows (delivery.scheduling), so one backlog cannot hide another's.
        Index(
            "ix_deliveries_due_application",
            "application_id",
            "next_attempt_at",
            postgresql_where=text(DUE_WITH_A_TIME_SQL),
        ),
        # The same rows by endpoint: when an endpoint's backlog fills its application's
        # rows and it can take only part of them, the claim reads each other endpoint's.
        Index(
            "ix_deliveries_due_endpoint",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text(DUE_WITH_A_TIME_SQL),
        ),
        Index(
            "ix_deliveries_lease",
            "lease_expires_at",
            postgresql_where=text(f"state = {SENDING_SQL}"),
        ),
        Index("ix_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_deliveries_application_created", "application_id", "created_at"),
        # Open deliveries only: a delivery that ends leaves it, so its size follows the
        # backlog, not the history (the undelivered view and the backlog gauges read it).
        Index(
            "ix_deliveries_open_created",
            "state",
            "created_at",
            postgresql_where=text(f"state IN {OPEN_SQL}"),
        ),
        # Keyed deliveries only (webhooks_core.deliveries.ordering): the claim's probes for an
        # earlier open, or dead, delivery of the same endpoint and key.
        Index(
            "ix_deliveries_ordering_open",
            "endpoint_id",
            "ordering_key",
            "id",
            postgresql_where=text(f"ordering_key IS NOT NULL AND state IN {OPEN_SQL}"),
        ),
        # Parked deliveries only (keyed, due by state, no time yet: behind their key's head):
        # waking reads the first one of a key, and the sweep the keys that have any.
        Index(
            "ix_deliveries_parked",
            "endpoint_id",
            "ordering_key",
            "id",
            postgresql_where=text(
                f"ordering_key IS NOT NULL AND state IN {DUE_SQL} AND next_attempt_at IS NULL"
            ),
        ),
        Index(
            "ix_deliveries_ordering_dead",
            "endpoint_id",
            "ordering_key",
            "id",
            postgresql_where=text(f"ordering_key IS NOT NULL AND state = {DEAD_SQL}"),
        ),
        CheckConstraint(f"state IN {ALL_SQL}", name="state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(String(128))
    # The message's ordering key, copied at fan-out (webhooks_core.deliveries.ordering).
    ordering_key: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), server_default=DeliveryState.PENDING.value)
    attempt_count: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"), default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    # The claim of one worker task; see delivery.scheduling in the webhook service.
    lease_token: Mapped[uuid.UUID | None]
    # Why the next attempt happens when not by schedule ("replay"); copied to the attempt.
    next_trigger: Mapped[str | None] = mapped_column(String(16))
    # Leases in a row that ran out with nothing recorded; the scheduler dead-letters the
    # delivery at WEBHOOKS_MAX_LEASE_EXPIRIES (a trigger resets it when an attempt is
    # recorded or the delivery is replayed).
    lease_expiries: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"), default=0)
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class DeliveryLease(Base):
    """One batch of deliveries in flight, per endpoint it holds: leased by a scheduler, sent
    by one worker task.

    One row per batch and endpoint (not per delivery), so counting an endpoint's (and an
    application's) batches in flight, which the scheduler does on every claim cycle, reads a
    handful of rows.
    """

    __tablename__ = "delivery_leases"

    token: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = created_at()


class Attempt(Base):
    """One HTTP request of a delivery, with what came back.

    Partitioned by day of ``started_at`` (``attempts_pYYYYMMDD`` and ``attempts_default``;
    migration 0011, :mod:`webhooks_core.retention`): retention drops a day by dropping its
    partition.  The key is ``(id, started_at)`` because a partitioned table's keys must hold
    the partition key; ``id`` alone is still unique (one sequence).
    """

    __tablename__ = "attempts"
    __table_args__ = (
        Index("ix_attempts_delivery_started", "delivery_id", "started_at"),
        Index("ix_attempts_endpoint_started", "endpoint_id", "started_at"),
        # Search: an endpoint's attempts with one status code, newest first, one page read.
        Index("ix_attempts_endpoint_status_started", "endpoint_id", "status_code", "started_at"),
        {"postgresql_partition_by": "RANGE (started_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, ATTEMPT_IDS, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("deliveries.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(primary_key=True)
    latency_ms: Mapped[float] = mapped_column(Double)
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    outcome: Mapped[str] = mapped_column(
        String(32), comment="success, http_error, timeout, connect_error, blocked, too_large, ..."
    )
    error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text, comment="first KiB")
    trigger: Mapped[str] = mapped_column(String(16), server_default="scheduled")


class DeadLetter(Base):
    """A delivery whose retries ran out; open until redriven."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index(
            "uq_dead_letters_open_delivery",
            "delivery_id",
            unique=True,
            postgresql_where=text("redriven_at IS NULL"),
        ),
        Index("ix_dead_letters_application_created", "application_id", "created_at"),
        # Retention deletes deliveries; their dead letters (redriven ones too) go by cascade.
        Index("ix_dead_letters_delivery", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("deliveries.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    redriven_at: Mapped[datetime | None]


class Replay(Base):
    """The audit record of a resend, recover or redrive request."""

    __tablename__ = "replays"
    __table_args__ = (Index("ix_replays_application_created", "application_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    application_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32), comment="delivery, message, recover, redrive")
    criteria: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    requested_by: Mapped[str] = mapped_column(String(64))
    deliveries_requeued: Mapped[int] = mapped_column(server_default=text("0"), default=0)
    created_at: Mapped[datetime] = created_at()


def cancel_open_deliveries(endpoint_id: uuid.UUID, reason: str) -> Any:
    """The UPDATE that cancels every non-terminal delivery of an endpoint."""
    from sqlalchemy import func, update

    return (
        update(Delivery)
        .where(
            Delivery.endpoint_id == endpoint_id,
            Delivery.state.in_(OPEN_STATES),
        )
        .values(
            state=DeliveryState.CANCELLED,
            next_attempt_at=None,
            lease_expires_at=None,
            last_error=reason,
            updated_at=func.now(),
        )
    )
