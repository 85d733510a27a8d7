"""Applications (tenants) and the API tokens that act for them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, text
from sqlalchemy.orm import Mapped, mapped_column

from webhooks_core.models.base import Base, created_at, updated_at, uuid_pk
from webhooks_core.retention.policy import RetentionOverrides


class Application(Base):
    """A tenant: owns endpoints, messages and tokens."""

    __tablename__ = "applications"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(256))
    uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb"), default=dict
    )
    # Days kept (webhooks_core.retention); null: the platform default (CoreSettings).
    retention_attempts_days: Mapped[int | None] = mapped_column(
        comment="days attempts are kept; null: the platform default"
    )
    retention_messages_days: Mapped[int | None] = mapped_column(
        comment="days messages are kept; null: the platform default"
    )
    retention_payload_days: Mapped[int | None] = mapped_column(
        comment="days payload are kept; null: the platform default"
    )
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    @property
    def retention(self) -> RetentionOverrides:
        """The application's own retention values (None: the platform's default)."""
        return RetentionOverrides(
            self.retention_attempts_days, self.retention_messages_days, self.retention_payload_days
        )


class ApiToken(Base):
    """A bearer token of one application; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(256))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = created_at()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
