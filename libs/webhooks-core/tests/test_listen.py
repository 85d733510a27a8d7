"""The LISTEN helper against the real PostgreSQL: wake, drain, time out, reconnect."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg2  # type: ignore[import-untyped,unused-ignore]
import pytest
from sqlalchemy import Engine, text

from webhooks_core.listen import Listener, libpq_dsn
from webhooks_core.settings import CoreSettings


@pytest.fixture
def channel() -> str:
    return f"webhooks_test_listen_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def listener(settings: CoreSettings, channel: str) -> Iterator[Listener]:
    listener = Listener(libpq_dsn(settings.database_url), [channel], connect_timeout=5)
    yield listener
    listener.close()


def notify(engine: Engine, channel: str, *payloads: str) -> None:
    """Notify ``payloads`` in one transaction (delivered at its commit)."""
    with engine.begin() as conn:
        for payload in payloads:
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": channel, "payload": payload},
            )


def drain(listener: Listener, want: set[str]) -> set[str]:
    """Wait until ``want`` all arrived (notifications may come in more than one read)."""
    got: set[str] = set()
    deadline = time.monotonic() + 5
    while not want <= got and time.monotonic() < deadline:
        got |= listener.wait(1.0) or set()
    return got


def test_libpq_dsn_drops_the_driver_and_keeps_the_password() -> None:
    url = "postgresql+psycopg2://user:s3cret@127.0.0.1:5432/db"
    assert libpq_dsn(url) == "postgresql://user:s3cret@127.0.0.1:5432/db"


def test_wait_returns_the_payloads_committed_since_connect(
    engine: Engine, listener: Listener, channel: str
) -> None:
    listener.connect()
    # Within one transaction PostgreSQL sends a repeated payload once.
    notify(engine, channel, "due", "free", "due")
    assert drain(listener, {"due", "free"}) == {"due", "free"}
    # Drained: nothing is left for the next wait, which times out.
    started = time.monotonic()
    assert listener.wait(0.2) == set()
    assert time.monotonic() - started >= 0.15


def test_notifications_of_other_channels_do_not_wake(
    engine: Engine, listener: Listener, channel: str
) -> None:
    listener.connect()
    notify(engine, f"{channel}_other", "due")
    assert listener.wait(0.2) == set()


def test_a_lost_connection_is_rebuilt_on_the_next_wait(
    engine: Engine, listener: Listener, channel: str
) -> None:
    listener.connect()
    with engine.begin() as conn:
        killed = (
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query = :query AND pid <> pg_backend_pid()"
                ),
                {"query": f"LISTEN {channel}"},
            )
            .scalars()
            .all()
        )
    assert killed == [True]
    deadline = time.monotonic() + 5
    while listener.wait(0.2) is not None:
        assert time.monotonic() < deadline, "the lost connection was not noticed"
    assert not listener.connected
    listener.connect()
    notify(engine, channel, "free")
    assert drain(listener, {"free"}) == {"free"}


def test_an_unreachable_database_is_no_error_for_wait() -> None:
    listener = Listener("postgresql://postgres@127.0.0.1:1/none", ["x"], connect_timeout=2)
    with pytest.raises(psycopg2.Error):
        listener.connect()
    assert listener.wait(0.1) is None
    started = time.monotonic()
    assert listener.wait_or_sleep(0.3, backoff=0.2) == set()
    assert time.monotonic() - started >= 0.15
    assert not listener.connected
