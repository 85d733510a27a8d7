"""Alembic environment: runs migrations online against ``sqlalchemy.url``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from webhooks_core.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run every pending migration in one transaction."""
    url = (
        context.config.attributes.get("database_url")
        or os.environ.get("WEBHOOKS_DATABASE_URL")
        or context.config.get_main_option("sqlalchemy.url")
    )
    assert url, "sqlalchemy.url is not set"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
