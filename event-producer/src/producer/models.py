"""The demo producer's own tables: people and uploaded files (plus the outbox, from ``outbox``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ProducerBase(DeclarativeBase):
    """Base of the producer's tables (its own database, its own migration history)."""

    type_annotation_map = {datetime: DateTime(timezone=True), uuid.UUID: UUID(as_uuid=True)}


class Person(ProducerBase):
    """A person of the demo; every change fires a ``person.*`` event."""

    __tablename__ = "people"
    __table_args__ = (Index("ix_people_created_at_id", "created_at", "id"),)
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Upload(ProducerBase):
    """A stored file; its upload fires ``file.uploaded``."""

    __tablename__ = "uploads"
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text, comment="relative to the upload directory")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
