"""Database engine and sessions.

One engine per process, built from :class:`~webhooks_core.settings.CoreSettings`.  Domain
functions take a :class:`~sqlalchemy.orm.Session` and own the transaction they run in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2.extensions  # type: ignore[import-untyped]
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.settings import ENV_PREFIX, CoreSettings, SettingsError, redact_url

T = TypeVar("T")

# Without a pre-ping, pooled connections are replaced after this long anyway (a proxy or
# firewall may drop idle ones silently).
POOL_RECYCLE_SECONDS = 1800


def _tolerant(name: str, exact: Any) -> Any:
    """A timestamp type caster that reads what Python cannot hold as its nearest bound.

    PostgreSQL keeps years up to 294276 and before Christ; Python's datetime stops at 1..9999
    and psycopg2 raises on the rest (it already reads ``infinity`` as ``datetime.max``).  Rows
    that earlier versions stored with such a timestamp read back clamped to the bound instead
    of failing every query that touches them.
    """
    highest, lowest = exact("infinity", None), exact("-infinity", None)

    def cast(value: str | None, cursor: Any) -> Any:
        try:
            return exact(value, cursor)
        except ValueError:
            assert value is not None
            return lowest if value.endswith("BC") else highest

    return psycopg2.extensions.new_type(exact.values, name, cast)


psycopg2.extensions.register_type(
    _tolerant("TOLERANT_TIMESTAMPTZ", psycopg2.extensions.PYDATETIMETZ)
)
psycopg2.extensions.register_type(_tolerant("TOLERANT_TIMESTAMP", psycopg2.extensions.PYDATETIME))


def make_engine(settings: CoreSettings, *, check: bool = True, pre_ping: bool = True) -> Engine:
    """Create the engine; with ``check`` a missing or unreachable database fails now.

    ``pre_ping`` costs a ``SELECT 1`` round trip per checkout.  Request paths that run their
    transactions through :func:`run_transaction` (which retries a transaction whose
    connection turned out dead) or answer a dead connection with a 503 can do without it: on
    the first disconnect SQLAlchemy invalidates every pooled connection of that age.
    """
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=POOL_RECYCLE_SECONDS,
        future=True,
    )
    if check:
        check_database(engine, settings)
    return engine


def check_database(engine: Engine, settings: CoreSettings) -> None:
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


def run_transaction(
    factory: sessionmaker[Session], work: Callable[[Session], T], *, attempts: int = 2
) -> T:
    """``work(session)`` in one transaction, committed on success, rolled back on error.

    A transaction that fails before its commit because its connection was dead (a stale
    pooled connection after a database restart) is run again on a fresh connection, up to
    ``attempts`` times in all: nothing of it was committed, so running it again is safe.  A
    failure during the commit itself is never retried (the commit may have happened); it
    propagates, as do all other errors.
    """
    for attempt in range(1, attempts + 1):
        with factory() as session:
            session.begin()
            try:
                result = work(session)
            except DBAPIError as exc:
                session.rollback()
                if exc.connection_invalidated and attempt < attempts:
                    continue
                raise
            except BaseException:
                session.rollback()
                raise
            session.commit()
            return result
    raise AssertionError("unreachable")  # pragma: no cover
