"""Alembic environment of the producer database."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from outbox.schema import metadata as outbox_metadata
from producer.migrations import VERSION_TABLE
from producer.models import ProducerBase

target_metadata = [ProducerBase.metadata, outbox_metadata]


def run_migrations_online() -> None:
    """Run every pending migration in one transaction."""
    url = context.config.attributes.get("database_url")
    assert url, "the producer database URL is not set"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
