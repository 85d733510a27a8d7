"""The lost-connection policy and the transaction convention of ``webhooks_core.db``.

The first half is pure (no database): which errors count, when work runs again, the
backoff.  The second half kills real connections with ``pg_terminate_backend`` (nothing is
restarted) and watches :func:`run_transaction` answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from webhooks_core.db import (
    LOST_CONNECTION,
    Attempt,
    Backoff,
    LostConnectionPolicy,
    connection_lost,
    database_unavailable,
    make_engine,
    make_session_factory,
    retry_lost_connection,
    run_transaction,
)
from webhooks_core.settings import CoreSettings


def lost() -> OperationalError:
    """What SQLAlchemy raises when a connection died under a statement."""
    return OperationalError(
        "SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True
    )


def refused() -> OperationalError:
    """What it raises when a new connection is refused."""
    return OperationalError(None, None, Exception("connection refused"))


# -- Which errors count ---------------------------------------------------------------------


def test_a_connection_that_died_under_a_statement_is_lost() -> None:
    assert connection_lost(lost())
    assert connection_lost(DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True))


@pytest.mark.parametrize(
    "error",
    [
        refused(),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        ValueError("no database at all"),
    ],
)
def test_other_errors_are_no_lost_connection(error: BaseException) -> None:
    assert not connection_lost(error)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (lost(), True),
        (refused(), True),
        (InterfaceError(None, None, Exception("connection already closed")), True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("x"), False),
    ],
)
def test_the_database_is_unavailable_when_lost_or_refused(
    error: BaseException, unavailable: bool
) -> None:
    assert database_unavailable(error) is unavailable


# -- When work runs again -------------------------------------------------------------------


def test_a_lost_connection_runs_again_once_before_the_point_of_no_return() -> None:
    policy = LostConnectionPolicy(attempts=2)
    assert policy.run_again(lost(), Attempt(1))
    assert not policy.run_again(lost(), Attempt(2))  # out of tries
    assert not policy.run_again(refused(), Attempt(1))  # a refused connection: 503 / backoff
    passed = Attempt(1)
    passed.point_of_no_return()
    assert not policy.run_again(lost(), passed)


def test_retry_runs_work_again_on_a_new_connection_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries: list[int] = []

    def work(attempt: Attempt) -> str:
        tries.append(attempt.number)
        if attempt.number == 1:
            raise lost()
        return "done"

    with caplog.at_level(logging.WARNING, logger="webhooks_core.db"):
        assert retry_lost_connection(work, what="batch 7") == "done"
    assert tries == [1, 2]
    assert [r.getMessage() for r in caplog.records] == [
        "batch 7: its database connection was dead; once more on a new one"
    ]


def test_retry_gives_up_after_the_policys_attempts() -> None:
    tries: list[int] = []

    def work(attempt: Attempt) -> None:
        tries.append(attempt.number)
        raise lost()

    with pytest.raises(OperationalError):
        retry_lost_connection(work, policy=LostConnectionPolicy(attempts=3))
    assert tries == [1, 2, 3]


def test_work_past_its_point_of_no_return_never_runs_again() -> None:
    tries: list[int] = []

    def work(attempt: Attempt) -> None:
        tries.append(attempt.number)
        attempt.point_of_no_return()  # e.g. the requests went out
        raise lost()

    with pytest.raises(OperationalError):
        retry_lost_connection(work)
    assert tries == [1]


@pytest.mark.parametrize("error", [refused(), IntegrityError("INSERT", {}, Exception("dup"))])
def test_other_errors_propagate_at_once(error: Exception) -> None:
    tries: list[int] = []

    def work(attempt: Attempt) -> None:
        tries.append(attempt.number)
        raise error

    with pytest.raises(type(error)):
        retry_lost_connection(work)
    assert tries == [1]


# -- Backoff of the loops -------------------------------------------------------------------


def test_pauses_double_up_to_the_cap() -> None:
    policy = LostConnectionPolicy(backoff_base=0.2, backoff_cap=1.0)
    assert [policy.pause(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.pause(10_000) == 1.0  # no overflow after a long outage
    assert policy.pause(2, jitter=0.5) == 0.2


def test_backoff_counts_failures_in_a_row_and_resets() -> None:
    backoff = Backoff(LostConnectionPolicy(backoff_base=0.2, backoff_cap=5.0), jitter=lambda: 1.0)
    assert [backoff.next() for _ in range(3)] == [0.2, 0.4, 0.8]
    backoff.reset()
    assert backoff.next() == 0.2


def test_backoff_jitter_stays_within_half_and_whole_of_the_pause() -> None:
    backoff = Backoff()
    pauses = [backoff.next() for _ in range(40)]
    assert all(
        LOST_CONNECTION.backoff_cap / 2 <= p <= LOST_CONNECTION.backoff_cap for p in pauses[-5:]
    )
    assert LOST_CONNECTION.backoff_base / 2 <= pauses[0] <= LOST_CONNECTION.backoff_base


# -- run_transaction against the real database ----------------------------------------------


@pytest.fixture
def own_engine(settings: CoreSettings) -> Iterator[tuple[Engine, str]]:
    """A pool of its own (no pre-ping, as the services'), known by its application_name."""
    name = f"lost_connection_{uuid.uuid4().hex[:8]}"
    url = make_url(settings.database_url).update_query_dict({"application_name": name})
    engine = make_engine(settings, url=url.render_as_string(hide_password=False), pool_size=1)
    yield engine, name
    engine.dispose()


def kill(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": name},
            ).scalar_one()
        )


def test_a_transaction_on_a_dead_pooled_connection_runs_again(
    engine: Engine, own_engine: tuple[Engine, str]
) -> None:
    pool, name = own_engine
    sessions = make_session_factory(pool)
    pid_before = run_transaction(sessions, lambda s: s.scalar(text("SELECT pg_backend_pid()")))
    assert kill(engine, name) == 1
    runs: list[int] = []

    def work(session: Session) -> int:
        runs.append(1)
        return int(session.scalar(text("SELECT pg_backend_pid()")))

    pid_after = run_transaction(sessions, work)
    assert len(runs) == 2  # once on the dead connection, once on a new one
    assert pid_after != pid_before


def test_a_commit_that_met_a_lost_connection_is_never_run_again(
    engine: Engine, own_engine: tuple[Engine, str]
) -> None:
    pool, name = own_engine
    runs: list[int] = []

    def work(session: Session) -> None:
        runs.append(1)
        session.execute(text("SELECT 1"))
        kill(engine, name)  # dies before its COMMIT: it may or may not have happened

    with pytest.raises(DBAPIError) as raised:
        run_transaction(make_session_factory(pool), work)
    assert connection_lost(raised.value)
    assert runs == [1]


def test_retry_false_tries_once(engine: Engine, own_engine: tuple[Engine, str]) -> None:
    pool, name = own_engine
    sessions = make_session_factory(pool)
    run_transaction(sessions, lambda s: s.execute(text("SELECT 1")))
    kill(engine, name)
    with pytest.raises(DBAPIError) as raised:
        run_transaction(sessions, lambda s: s.execute(text("SELECT 1")), retry=False)
    assert connection_lost(raised.value)
    # SQLAlchemy dropped the dead pool: the next transaction connects anew.
    assert run_transaction(sessions, lambda s: s.scalar(text("SELECT 2")), retry=False) == 2
