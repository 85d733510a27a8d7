"""The outbox table, kept in the producer's own database next to its domain tables.

A producer includes :data:`metadata` in its migrations (the people demo's Alembic history
does).  Rows are written by :func:`outbox.publish` inside the producer's transaction and
marked ``sent_at`` by the relay once RabbitMQ has confirmed them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)

# Relays LISTEN on this channel; publish() NOTIFYs it, and PostgreSQL delivers the
# notification only when (and if) the publishing transaction commits.
NOTIFY_CHANNEL = "webhooks_outbox"

metadata = MetaData()

OUTBOX = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("event_type", String(128), nullable=False),
    Column("body", Text, nullable=False, comment="the envelope's wire form (JSON)"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    # Only unsent rows are ever scanned, so the index stays as small as the backlog.
    Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
)
