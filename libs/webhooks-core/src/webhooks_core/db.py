"""Database engine, the one transaction convention, and the one answer to a lost connection.

One engine per database and process, built by :func:`make_engine` (no pre-ping: a round
trip per checkout is what the lost-connection policy below makes unnecessary).

**Transactions.**  Code in ``src/`` runs every unit of database work, reads included, as
``run_transaction(sessions, work)``: ``work(session)`` in one transaction, committed when it
returns, rolled back when it raises.  Sessions keep loaded attributes after the commit, so a
domain function may return what it loaded.  :func:`transaction` (a ``with`` block, tried
once) is for tests and one-off scripts that set data up.

**Lost connections** (docs/architecture.md, *Transactions and lost connections*): one
policy, :data:`LOST_CONNECTION`, for every path.

- What counts: :func:`connection_lost` (a connection that died under a statement: database
  restart, terminated backend, network); SQLAlchemy then drops every pooled connection of
  that age.  :func:`database_unavailable` adds the database refusing or failing a new
  connection.
- Run again: work that met a lost connection before its point of no return (the commit of a
  transaction; a request sent by the delivery engine) runs again at once on a new
  connection, ``attempts`` tries in all (:func:`retry_lost_connection`); nothing of it was
  committed, so running it again is safe.  Past that point it never runs again: the caller's
  own guarantee takes over (at-least-once delivery through the lease, redelivery by
  RabbitMQ, a client retrying with its Idempotency-Key).
- Otherwise: an HTTP request answers 503 with ``Retry-After: retry_after_seconds``
  (:mod:`webhooks_core.problems`); a loop (scheduler, ingest consumer, outbox relay) waits
  :class:`Backoff` (exponential from ``backoff_base`` to ``backoff_cap``, with jitter) and
  tries again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2.extensions  # type: ignore[import-untyped]
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.settings import ENV_PREFIX, CoreSettings, SettingsError, redact_url

T = TypeVar("T")

log = logging.getLogger(__name__)

# Pooled connections are replaced after this long anyway (a proxy or firewall may drop idle
# ones silently).
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


def make_engine(
    settings: CoreSettings,
    *,
    url: str | None = None,
    variable: str = "DATABASE_URL",
    pool_size: int | None = None,
    check: bool = True,
    pre_ping: bool = False,
) -> Engine:
    """The engine of ``url`` (the platform database by default); with ``check`` a missing or
    unreachable database fails now, naming ``variable`` (``WEBHOOKS_`` + it) to set.

    No pre-ping in the services: every path runs its work through the lost-connection
    policy, so a stale pooled connection costs one retry after a restart instead of a round
    trip per checkout.  ``pre_ping`` is for tests and tools that use the engine directly.
    """
    size = pool_size if pool_size is not None else settings.database_pool_size
    engine = create_engine(
        url or settings.database_url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=pre_ping,
        pool_recycle=POOL_RECYCLE_SECONDS,
    )
    if check:
        check_database(engine, variable, settings.database_startup_wait_seconds)
    return engine


# What a database answers to a URL that will never work, however long one waits: fail at
# once.  Anything else (refused, starting up, shutting down, a name not resolved yet beside
# a starting container) may pass: wait for it.
_WRONG_URL = ("does not exist", "authentication failed", "no pg_hba.conf entry")


def check_database(
    engine: Engine,
    variable: str = "DATABASE_URL",
    wait_seconds: float = 0.0,
    backoff: Backoff | None = None,
) -> None:
    """Fail with a message naming the variable to set when the database cannot be reached
    within ``wait_seconds``.

    A process started while its database restarts, or before it is up, waits for it (with
    the lost-connection policy's pauses) instead of exiting: exited, nothing would start it
    again but an operator or a supervisor's next try.  A wrong URL fails at once.
    """
    deadline = time.monotonic() + wait_seconds
    backoff = backoff or Backoff()
    while True:
        try:
            ping(engine)
            return
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            pause = backoff.next()
            if any(w in reason for w in _WRONG_URL) or time.monotonic() + pause > deadline:
                url = redact_url(engine.url.render_as_string(hide_password=False))
                raise SettingsError(
                    f"cannot reach the database at {url} "
                    f"({reason}); set {ENV_PREFIX}{variable} to a reachable PostgreSQL database"
                ) from None
            log.warning("the database is not reachable yet (%s); next try in %.1f s", reason, pause)
            time.sleep(pause)


def ping(engine: Engine) -> None:
    """One ``SELECT 1`` under the lost-connection policy; raises when the database is away."""
    run_transaction(make_session_factory(engine), _select_one, what="ping")


def _select_one(session: Session) -> None:
    session.execute(text("SELECT 1"))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit, so results can be serialized."""
    return sessionmaker(engine, expire_on_commit=False)


# -- Lost connections: the one policy ------------------------------------------------------


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection that died under a statement.

    SQLAlchemy recognised a disconnect and invalidated the connection and every pooled one
    checked out before it: the next checkout connects anew.
    """
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot serve now: a lost connection, or a new one
    refused or failing (an ``OperationalError`` or ``InterfaceError`` of the driver)."""
    return connection_lost(exc) or isinstance(exc, OperationalError | InterfaceError)


@dataclass(frozen=True)
class LostConnectionPolicy:
    """How every path answers a lost or refused database connection (see the module doc)."""

    attempts: int = 2
    """Tries in all of work that met a lost connection before its point of no return."""
    backoff_base: float = 0.2
    """A loop's first pause (seconds) after the database failed it."""
    backoff_cap: float = 5.0
    """A loop's longest pause (seconds)."""
    retry_after_seconds: int = 1
    """What an HTTP client told 503 should wait (``Retry-After``)."""

    def run_again(self, exc: BaseException, attempt: Attempt) -> bool:
        """Whether work whose ``attempt`` raised ``exc`` runs again now."""
        return attempt.retryable and attempt.number < self.attempts and connection_lost(exc)

    def pause(self, failures: int, jitter: float = 1.0) -> float:
        """A loop's pause after ``failures`` failures in a row (1 or more); ``jitter`` in
        [0.5, 1] spreads processes that failed together."""
        exponent = min(max(failures, 1) - 1, 30)
        return min(self.backoff_cap, self.backoff_base * 2.0**exponent) * jitter


@dataclass
class Attempt:
    """One try of work under the policy; ``number`` counts from 1."""

    number: int
    retryable: bool = True

    def point_of_no_return(self) -> None:
        """From here on, a failure may leave effects behind: never run this work again."""
        self.retryable = False


LOST_CONNECTION = LostConnectionPolicy()


def retry_lost_connection(
    work: Callable[[Attempt], T],
    *,
    what: str = "transaction",
    policy: LostConnectionPolicy = LOST_CONNECTION,
) -> T:
    """``work(attempt)``, run again at once when it met a lost connection before calling
    ``attempt.point_of_no_return()``, up to ``policy.attempts`` tries; any other error, or
    the last, propagates."""
    number = 1
    while True:
        attempt = Attempt(number)
        try:
            return work(attempt)
        except DBAPIError as exc:
            if not policy.run_again(exc, attempt):
                raise
        log.warning("%s: its database connection was dead; once more on a new one", what)
        number += 1


class Backoff:
    """A loop's pauses after failures in a row, by :data:`LOST_CONNECTION`."""

    def __init__(
        self,
        policy: LostConnectionPolicy = LOST_CONNECTION,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ) -> None:
        self._policy, self._jitter, self._failures = policy, jitter, 0

    def next(self) -> float:
        """The pause after one more failure."""
        self._failures += 1
        return self._policy.pause(self._failures, self._jitter())

    def reset(self) -> None:
        """After a success: the next failure pauses ``backoff_base`` again."""
        self._failures = 0


# -- Transactions: the one convention ------------------------------------------------------


def run_transaction(
    sessions: sessionmaker[Session],
    work: Callable[[Session], T],
    *,
    what: str = "transaction",
    retry: bool = True,
) -> T:
    """``work(session)`` in one transaction, committed when it returns, rolled back when it
    raises; its result.

    A transaction that met a lost connection before its commit runs again on a new one
    (:func:`retry_lost_connection`): nothing of it was committed.  A failure of the commit
    itself is never retried (the commit may have happened).  ``retry=False`` tries once: for
    work that already runs inside a caller's :func:`retry_lost_connection`, or past the
    caller's point of no return.  ``work`` must touch nothing but the session.
    """

    def once(attempt: Attempt) -> T:
        with sessions() as session, session.begin():
            result = work(session)
            attempt.point_of_no_return()  # the commit, on leaving the block
        return result

    if not retry:
        return once(Attempt(1, retryable=False))
    return retry_lost_connection(once, what=what)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session inside one transaction, tried once (tests and one-off scripts; ``src/``
    uses :func:`run_transaction`)."""
    with factory() as session, session.begin():
        yield session
