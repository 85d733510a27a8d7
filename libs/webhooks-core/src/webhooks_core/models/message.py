"""Messages (accepted events) and the idempotency keys of HTTP ingestion."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from webhooks_core.models.base import Base, created_at


class Message(Base):
    """One accepted event, stored once per ``event_id`` (the ``webhook-id``) and application.

    ``application_id`` is null for a broadcast: it fans out to every application's endpoints.
    Event ids are unique per application (two applications may use the same one, and neither
    can tell whether the other has); broadcasts' ids are unique among broadcasts.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint(
            "event_id",
            "application_id",
            name="uq_messages_event_id_application_id",
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_messages_application_created", "application_id", "created_at"),
        Index("ix_messages_event_type_created", "event_type", "created_at"),
        Index("ix_messages_created_at", "created_at"),
        # Search by a field of the payload: containment (payload @> '{"person": {"id": 7}}').
        Index(
            "ix_messages_payload",
            "payload",
            postgresql_using="gin",
            postgresql_ops={"payload": "jsonb_path_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128))
    application_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]]
    channels: Mapped[list[str] | None]
    # Deliveries of one endpoint with the same key go in order (deliveries.ordering).
    ordering_key: Mapped[str | None] = mapped_column(String(256))
    occurred_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16), comment="broker, http or relay")
    created_at: Mapped[datetime] = created_at()
    # Set when retention replaced the payload by ``{}`` (webhooks_core.retention): the
    # metadata stays, the data is gone; never while a delivery of the message is open.
    payload_dropped_at: Mapped[datetime | None] = mapped_column(
        comment="retention replaced the payload by {} at this time"
    )


class IdempotencyKey(Base):
    """The first answer to an ``Idempotency-Key``; kept for the idempotency window."""

    __tablename__ = "idempotency_keys"
    # Retention deletes messages; their keys go by cascade, found by this index.
    __table_args__ = (Index("ix_idempotency_keys_message", "message_id"),)

    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = created_at()
