# ruff: noqa: S608 - statements of the test's own constants
"""Retention on the real database: day partitions of attempts made ahead and dropped, a
partition holding an open delivery kept, per-application retention, payloads emptied."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.retention.partitions import DayPartition
from webhooks_core.retention.policy import Retention, RetentionError, check
from webhooks_core.retention.run import run_retention
from webhooks_core.settings import CoreSettings

NOW = datetime.now(UTC)


def _one(sessions: sessionmaker[Session], statement: str, **params: Any) -> Any:
    with sessions() as session, session.begin():
        result = session.execute(text(statement), params)
        return result.scalar() if result.returns_rows else None


def _app(sessions: sessionmaker[Session], **retention: int) -> tuple[uuid.UUID, uuid.UUID]:
    app, endpoint = uuid.uuid4(), uuid.uuid4()
    columns = "".join(f", retention_{k}" for k in retention)
    values = "".join(f", :{k}" for k in retention)
    _one(
        sessions,
        f"INSERT INTO applications (id, name{columns}) VALUES (:id, 'app'{values})",
        id=app,
        **retention,
    )
    _one(
        sessions,
        "INSERT INTO endpoints (id, application_id, url) VALUES (:id, :app, 'https://x.test/')",
        id=endpoint,
        app=app,
    )
    return app, endpoint


def _message(
    sessions: sessionmaker[Session],
    app_endpoint: tuple[uuid.UUID, uuid.UUID],
    days_ago: float,
    state: str = "delivered",
) -> tuple[int, int]:
    """A message of ``days_ago`` with one delivery in ``state`` and one attempt then."""
    app, endpoint = app_endpoint
    at = NOW - timedelta(days=days_ago)
    message = _one(
        sessions,
        "INSERT INTO messages (event_id, application_id, event_type, payload, occurred_at,"
        " source, created_at) VALUES (:event, :app, 't.x', '{\"person\": 1}', :at, 'http', :at)"
        " RETURNING id",
        event=f"evt_{uuid.uuid4().hex}",
        app=app,
        at=at,
    )
    delivery = _one(
        sessions,
        "INSERT INTO deliveries (message_id, endpoint_id, application_id, event_type, state,"
        " created_at) VALUES (:m, :e, :app, 't.x', :state, :at) RETURNING id",
        m=message,
        e=endpoint,
        app=app,
        state=state,
        at=at,
    )
    _one(
        sessions,
        "INSERT INTO attempts (delivery_id, endpoint_id, started_at, latency_ms, status_code,"
        " outcome) VALUES (:d, :e, :at, 12.5, 200, 'success') RETURNING id",
        d=delivery,
        e=endpoint,
        at=at,
    )
    return message, delivery


def _partition_exists(sessions: sessionmaker[Session], days_ago: float) -> bool:
    name = DayPartition((NOW - timedelta(days=days_ago)).date()).name
    return bool(_one(sessions, "SELECT to_regclass(:name) IS NOT NULL", name=name))


def _count(sessions: sessionmaker[Session], table: str, column: str, value: int) -> int:
    return int(_one(sessions, f"SELECT count(*) FROM {table} WHERE {column} = :v", v=value))


def test_partitions_are_made_ahead_and_old_ones_dropped_unless_a_delivery_is_open(
    db: sessionmaker[Session], settings: CoreSettings
) -> None:
    acme = _app(db)
    old_message, old_delivery = _message(db, acme, days_ago=40)
    _, open_delivery = _message(db, acme, days_ago=45, state="retrying")
    _, recent_delivery = _message(db, acme, days_ago=2)

    report = run_retention(db, settings, now=NOW)

    for ahead in range(settings.retention_partitions_ahead_days + 1):
        assert _partition_exists(db, -ahead)
    assert not _partition_exists(db, 40)
    assert DayPartition((NOW - timedelta(days=40)).date()).name in report.dropped
    assert _partition_exists(db, 45)  # holds an attempt of a delivery still retrying
    assert _count(db, "attempts", "delivery_id", open_delivery) == 1
    assert _count(db, "attempts", "delivery_id", recent_delivery) == 1
    assert _count(db, "attempts", "delivery_id", old_delivery) == 0
    # The message and delivery stay: 40 days is inside the 90 days of messages.
    assert _count(db, "deliveries", "id", old_delivery) == 1
    assert _count(db, "messages", "id", old_message) == 1
    assert _one(db, "SELECT count(*) FROM attempts_default") == 0
    # The statistics summaries are the long-term record: untouched.
    assert _one(db, "SELECT sum(messages) FROM message_stats WHERE width = 60") == 3

    _one(db, "UPDATE deliveries SET state = 'dead' WHERE id = :d RETURNING id", d=open_delivery)
    run_retention(db, settings, now=NOW)
    assert not _partition_exists(db, 45)  # terminal now: dropped on the next run


def test_each_application_keeps_its_own_retention(
    db: sessionmaker[Session], settings: CoreSettings
) -> None:
    acme = _app(db)  # the defaults: 30 days of attempts, 90 of messages, payloads kept
    brief = _app(db, attempts_days=7, messages_days=10, payload_days=3)
    acme_message, acme_delivery = _message(db, acme, days_ago=12)
    brief_old, brief_old_delivery = _message(db, brief, days_ago=12)
    brief_week, brief_week_delivery = _message(db, brief, days_ago=8)
    brief_recent, _ = _message(db, brief, days_ago=5)
    brief_open, brief_open_delivery = _message(db, brief, days_ago=20, state="pending")

    report = run_retention(db, settings, now=NOW)

    # acme's rows sit in the same day partitions and stay.
    assert _count(db, "attempts", "delivery_id", acme_delivery) == 1
    assert _one(db, "SELECT payload_dropped_at FROM messages WHERE id = :m", m=acme_message) is None
    # brief's message of 12 days is gone with its delivery and attempt (10 days of messages).
    assert _count(db, "messages", "id", brief_old) == 0
    assert _count(db, "deliveries", "id", brief_old_delivery) == 0
    # Its message of 8 days stays, without its attempt (7 days) or payload (3 days).
    assert _count(db, "messages", "id", brief_week) == 1
    assert _count(db, "attempts", "delivery_id", brief_week_delivery) == 0
    with db() as session:
        payload, dropped = session.execute(
            text("SELECT payload, payload_dropped_at FROM messages WHERE id = :m"),
            {"m": brief_recent},
        ).one()
    assert payload == {}
    assert dropped is not None
    # A message whose delivery is still open keeps everything, whatever its age.
    assert _count(db, "messages", "id", brief_open) == 1
    assert _count(db, "attempts", "delivery_id", brief_open_delivery) == 1
    assert _one(db, "SELECT payload FROM messages WHERE id = :m", m=brief_open) == {"person": 1}
    assert report.messages_deleted == 1
    assert report.attempts_deleted == 2
    assert report.payloads_dropped == 2  # 5 and 8 days old; the open one kept


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        (Retention(0, 90), "retention.attempts_days"),
        (Retention(30, 4000), "retention.messages_days"),
        (Retention(100, 90), "retention.attempts_days"),
        (Retention(30, 90, 91), "retention.payload_days"),
    ],
)
def test_retention_values_that_cannot_hold_are_refused(retention: Retention, field: str) -> None:
    with pytest.raises(RetentionError) as refused:
        check(retention)
    assert refused.value.field == field


def test_the_periodic_thread_remakes_partitions_ahead_and_counts_its_runs(
    db: sessionmaker[Session], settings: CoreSettings, engine: Any
) -> None:
    from prometheus_client import REGISTRY

    from webhooks_core.retention.run import start_retention

    run_retention(db, settings, now=NOW)
    last = DayPartition((NOW + timedelta(days=settings.retention_partitions_ahead_days)).date())
    _one(db, f"DROP TABLE {last.name}")
    assert not _partition_exists(db, -settings.retention_partitions_ahead_days)
    before = REGISTRY.get_sample_value("webhooks_retention_last_run_timestamp_seconds") or 0

    stop = start_retention(engine, settings, 0.2)  # what the scheduler starts (hourly there)
    assert stop is not None
    try:
        deadline = time.monotonic() + 30
        while not _partition_exists(db, -settings.retention_partitions_ahead_days):
            assert time.monotonic() < deadline, "the retention thread did not make the partition"
            time.sleep(0.1)
        while (
            REGISTRY.get_sample_value("webhooks_retention_last_run_timestamp_seconds") or 0
        ) <= before:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        stop.set()
    assert REGISTRY.get_sample_value("webhooks_retention_partitions") >= 9
    assert start_retention(engine, settings, 0) is None  # 0: no thread
