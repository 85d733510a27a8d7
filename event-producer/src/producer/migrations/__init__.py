"""The demo producer's own Alembic history (people, uploads and the outbox table).

``python -m producer.migrations`` migrates ``WEBHOOKS_PRODUCER_DATABASE_URL``.  The version
table is ``producer_alembic_version`` so the history never collides with the platform's.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent
VERSION_TABLE = "producer_alembic_version"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for this history and ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the producer database up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Migrate the producer database down to ``revision``."""
    command.downgrade(alembic_config(database_url), revision)
