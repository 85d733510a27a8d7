"""The one migration history builds the schema from an empty database and matches the models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from webhooks_core.migrations import downgrade, upgrade
from webhooks_core.models import Base
from webhooks_core.settings import Settings


@pytest.fixture
def scratch_settings(settings: Settings) -> Iterator[Settings]:
    scratch = f"{make_url(settings.database_url).database}_migrations"
    admin = create_engine(
        make_url(settings.database_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {scratch}"))
    url = make_url(settings.database_url).set(database=scratch)
    yield settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
    admin.dispose()


def test_upgrade_from_empty_matches_models_and_downgrades(scratch_settings: Settings) -> None:
    upgrade(scratch_settings)
    engine = create_engine(scratch_settings.database_url)
    with engine.connect() as conn:
        assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"

    downgrade(scratch_settings)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()
