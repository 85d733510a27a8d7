"""The catalogue of event types that messages and endpoint filters name."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from webhooks_core.models.base import Base, created_at, updated_at, uuid_pk


class EventType(Base):
    """An event type such as ``person.created``, optionally with a JSON schema for its data."""

    __tablename__ = "event_types"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, server_default="", default="")
    schema: Mapped[dict[str, Any] | None]
    example: Mapped[dict[str, Any] | None]
    archived: Mapped[bool] = mapped_column(server_default=text("false"), default=False)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
