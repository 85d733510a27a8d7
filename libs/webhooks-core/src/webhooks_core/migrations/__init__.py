"""The one Alembic migration history of the platform's database.

``python -m webhooks_core.migrations`` (or ``alembic upgrade head`` at the repository root)
brings the database named by ``WEBHOOKS_DATABASE_URL`` to the latest revision.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from webhooks_core.settings import CoreSettings

HERE = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for this history and ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def upgrade(settings: CoreSettings, revision: str = "head") -> None:
    """Migrate the settings' database up to ``revision``."""
    command.upgrade(alembic_config(settings.database_url), revision)


def downgrade(settings: CoreSettings, revision: str = "base") -> None:
    """Migrate the settings' database down to ``revision``."""
    command.downgrade(alembic_config(settings.database_url), revision)
