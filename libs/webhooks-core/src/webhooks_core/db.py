"""Database engine and sessions.

One engine per process, built from :class:`~webhooks_core.settings.Settings`.  Domain
functions take a :class:`~sqlalchemy.orm.Session` and own the transaction they run in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.settings import ENV_PREFIX, Settings, SettingsError, redact_url


def make_engine(settings: Settings, *, check: bool = True) -> Engine:
    """Create the engine; with ``check`` a missing or unreachable database fails now."""
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        future=True,
    )
    if check:
        check_database(engine, settings)
    return engine


def check_database(engine: Engine, settings: Settings) -> None:
    """Fail with a message naming the variable to set when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise SettingsError(
            f"cannot reach the database at {redact_url(settings.database_url)} "
            f"({reason}); set {ENV_PREFIX}DATABASE_URL to a reachable PostgreSQL database"
        ) from None


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit, so results can be serialized."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on error."""
    with factory() as session, session.begin():
        yield session
