"""Fixtures shared by every test suite: real PostgreSQL and RabbitMQ on 127.0.0.1.

The tests use their own database (``webhooks_test``) and RabbitMQ vhost (``webhooks_test``),
created by ``scripts/ensure-services.sh``.  The schema is migrated from empty once per run;
each test that asks for ``db`` starts from empty tables (truncated, not rolled back, because
real workers in other threads and processes must see what a test commits).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import make_engine, make_session_factory
from webhooks_core.endpoints import sealing
from webhooks_core.migrations import upgrade
from webhooks_core.models import Base
from webhooks_core.settings import CoreSettings

TEST_DATABASE_URL = os.environ.get(
    "WEBHOOKS_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_test"
)
TEST_BROKER_URL = os.environ.get(
    "WEBHOOKS_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/webhooks_test"
)
ADMIN_TOKEN = "test-admin-token-0123456789"  # noqa: S105
# The tests' own sealing key (base64 of 32 fixed bytes), in the environment so that every
# process a test starts seals and unseals with it.
TEST_SEALING_KEYS = "test1:" + base64.b64encode(bytes(range(32))).decode()
os.environ.setdefault("WEBHOOKS_SEALING_KEYS", TEST_SEALING_KEYS)
# This process (the tests themselves write and read endpoints) seals with it too.
sealing.install(sealing.KeyRing.parse(os.environ["WEBHOOKS_SEALING_KEYS"]))


SettingsT = TypeVar("SettingsT", bound=CoreSettings)


def make_test_settings(kind: type[SettingsT], **overrides: object) -> SettingsT:
    """Settings of kind ``kind`` in the test environment, loopback targets allowed (values a
    kind has no field for are ignored)."""
    values: dict[str, object] = {
        "database_url": TEST_DATABASE_URL,
        "broker_url": TEST_BROKER_URL,
        "admin_token": ADMIN_TOKEN,
        "allowed_target_networks": ["127.0.0.0/8", "::1/128"],
        "secret_rotation_grace_seconds": 3600,
    }
    values.update(overrides)
    return kind.from_env(**values)


@pytest.fixture(scope="session")
def make_settings() -> Callable[..., CoreSettings]:
    """:func:`make_test_settings`, for the conftest of each service (which overrides
    ``settings`` with its process's kind)."""
    return make_test_settings


@pytest.fixture(scope="session")
def settings() -> CoreSettings:
    return make_test_settings(CoreSettings)


@pytest.fixture(scope="session")
def engine(settings: CoreSettings) -> Iterator[Engine]:
    # Pre-pinged: tests kill backends, and read through the engine without run_transaction.
    engine = make_engine(settings, pre_ping=True)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def db(engine: Engine, sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Empty tables, and the session factory to look at them with."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            break
        except OperationalError as exc:
            # Session-long background processes (a scheduler, a worker) may hold a table
            # another TRUNCATE needs: PostgreSQL breaks the deadlock, and we try again.
            if getattr(exc.orig, "pgcode", None) != "40P01" or attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    return sessions
