"""Rows a scenario needs, written straight into the run's own platform database.

Endpoints get the secrets the receiver derives from their paths.  Deliveries are preloaded
*held* (due in ten years) and then released by one UPDATE, so a scenario measures delivering
them rather than how fast the harness can insert; the UPDATE's trigger wakes the scheduler.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.exc import OperationalError

from bench.receiver import derive_secret
from webhooks_core.endpoints import sealing
from webhooks_core.ids import new_message_id
from webhooks_core.messages.catalogue import add_missing_event_types
from webhooks_core.messages.envelope import webhook_body
from webhooks_core.models import Application, Endpoint, EndpointSecret, Message

HOLD = "now() + interval '10 years'"


def make_engine(database_url: str) -> Engine:
    """A small engine for the harness (the platform's processes have their own)."""
    return create_engine(database_url, pool_size=4, max_overflow=4, pool_pre_ping=True)


def vacuum_analyze(engine: Engine) -> float:
    """``VACUUM ANALYZE`` the run's database; returns the seconds it took.

    Stands in for autovacuum between scenarios: this machine's PostgreSQL runs with
    ``autovacuum = off``, so without it each scenario would inherit the previous ones' dead
    rows and statistics from before their bulk loads (plans for 1 endpoint where there are
    10,000), which no production database with autovacuum on would see.
    """
    started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    return time.monotonic() - started


def sample_payload(n: int) -> dict[str, Any]:
    """A person-like payload of about 300 bytes, as the people demo sends."""
    return {
        "id": n,
        "name": f"Ada Lovelace {n}",
        "email": f"ada{n}@example.org",
        "role": "analyst",
        "bio": "Wrote the first published algorithm for a machine. " * 4,
    }


def sample_body(event_type: str, n: int) -> bytes:
    """The exact body an endpoint receives for :func:`sample_payload` ``n``."""
    return webhook_body(event_type, datetime(2026, 1, 1, tzinfo=UTC), sample_payload(n))


def create_application(engine: Engine, name: str) -> uuid.UUID:
    """A fresh application."""
    app_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert(Application).values(id=app_id, name=name))
    return app_id


def ensure_event_types(engine: Engine, names: Sequence[str]) -> None:
    """Catalogue entries for ``names`` (HTTP ingestion refuses unknown types)."""
    with engine.begin() as conn:
        add_missing_event_types(conn, [{"name": name, "description": "bench"} for name in names])


@dataclass(frozen=True)
class EndpointRow:
    """An endpoint the harness created: its id, receiver path and subscribed types."""

    id: uuid.UUID
    path: str
    event_types: tuple[str, ...]


def create_endpoints(
    engine: Engine,
    application_id: uuid.UUID,
    base_url: str,
    seed: str,
    endpoints: Sequence[tuple[str, Sequence[str]]],
    *,
    max_in_flight: int | None = None,
    retry_schedule: Sequence[int] | None = None,
) -> list[EndpointRow]:
    """Create one endpoint per ``(path, event types)``, each with its derived secret."""
    rows = [EndpointRow(uuid.uuid4(), path, tuple(sorted(types))) for path, types in endpoints]
    with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            chunk = rows[start : start + 2000]
            conn.execute(
                insert(Endpoint),
                [
                    {
                        "id": row.id,
                        "application_id": application_id,
                        "url": base_url + row.path,
                        "event_types": list(row.event_types),
                        "description": "bench",
                        "max_in_flight": max_in_flight,
                        "retry_schedule": list(retry_schedule) if retry_schedule else None,
                    }
                    for row in chunk
                ],
            )
            conn.execute(
                insert(EndpointSecret),
                [
                    {
                        "id": uuid.uuid4(),
                        "endpoint_id": row.id,
                        "secret": sealing.seal(derive_secret(seed, row.path)),
                    }
                    for row in chunk
                ],
            )
    return rows


def preload(
    engine: Engine,
    application_id: uuid.UUID,
    event_type: str,
    events: int,
    *,
    state: str = "pending",
    attempt_count: int = 0,
) -> list[str]:
    """Store ``events`` messages of ``event_type`` and one held delivery per subscribed
    endpoint; return the event ids (the webhook-ids receivers will see)."""
    event_ids: list[str] = []
    occurred = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for start in range(0, events, 1000):
            count = min(1000, events - start)
            batch = [new_message_id() for _ in range(count)]
            message_ids = conn.execute(
                insert(Message).returning(Message.id),
                [
                    {
                        "event_id": event_id,
                        "application_id": application_id,
                        "event_type": event_type,
                        "payload": sample_payload(start + i),
                        "occurred_at": occurred,
                        "source": "http",
                    }
                    for i, event_id in enumerate(batch)
                ],
            ).scalars()
            conn.execute(
                text(
                    f"""
                    INSERT INTO deliveries (message_id, endpoint_id, application_id, event_type,
                                            state, attempt_count, next_attempt_at)
                    SELECT m.id, e.id, e.application_id, m.event_type, :state, :attempts, {HOLD}
                    FROM messages m JOIN endpoints e
                      ON e.event_types @> ARRAY[m.event_type]::text[]
                     AND e.enabled AND e.deleted_at IS NULL AND e.kind = 'subscription'
                    WHERE m.id = ANY(:ids)
                    """  # noqa: S608 - HOLD is a constant expression, values are bound
                ),
                {"ids": list(message_ids), "state": state, "attempts": attempt_count},
            )
            event_ids.extend(batch)
    return event_ids


def release(engine: Engine, event_type: str) -> float:
    """Make every held pending delivery of ``event_type`` due now (not the parked ones:
    they wait behind their key's head); return the database's commit-time clock (unix
    seconds), the start of the measurement."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE deliveries SET next_attempt_at = now() "
                "WHERE event_type = :type AND state = 'pending' AND next_attempt_at IS NOT NULL"
            ),
            {"type": event_type},
        )
    return db_clock(engine)


def db_clock(engine: Engine) -> float:
    """The database's clock, in unix seconds."""
    with engine.connect() as conn:
        return float(
            conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        )


def states(
    engine: Engine, event_type: str, endpoint_ids: Sequence[uuid.UUID] | None = None
) -> dict[str, int]:
    """Deliveries of ``event_type`` by state (optionally of some endpoints only)."""
    sql = "SELECT state, count(*) FROM deliveries WHERE event_type = :type"
    params: dict[str, Any] = {"type": event_type}
    if endpoint_ids is not None:
        sql += " AND endpoint_id = ANY(:ids)"
        params["ids"] = list(endpoint_ids)
    with engine.connect() as conn:
        return {row[0]: int(row[1]) for row in conn.execute(text(sql + " GROUP BY state"), params)}


def last_write(
    engine: Engine, event_type: str, endpoint_ids: Sequence[uuid.UUID] | None = None
) -> float:
    """When the last delivered row of ``event_type`` was written (unix seconds)."""
    sql = (
        "SELECT extract(epoch FROM max(updated_at)) FROM deliveries "
        "WHERE event_type = :type AND state = 'delivered'"
    )
    params: dict[str, Any] = {"type": event_type}
    if endpoint_ids is not None:
        sql += " AND endpoint_id = ANY(:ids)"
        params["ids"] = list(endpoint_ids)
    with engine.connect() as conn:
        value = conn.execute(text(sql), params).scalar_one()
    return float(value or 0.0)


def attempts_recorded(engine: Engine, endpoint_ids: Sequence[uuid.UUID]) -> int:
    """Attempt rows of some endpoints (every delivery writes at least one)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM attempts WHERE endpoint_id = ANY(:ids)"),
                {"ids": list(endpoint_ids)},
            ).scalar_one()
        )


def retire(engine: Engine, endpoint_ids: Sequence[uuid.UUID]) -> None:
    """Disable endpoints and cancel their open deliveries, so later scenarios start clean."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE endpoints SET enabled = false WHERE id = ANY(:ids)"),
            {"ids": list(endpoint_ids)},
        )
    cancel_open(engine, endpoint_ids=endpoint_ids)


def delivered_until(
    engine: Engine, event_type: str, until: float, endpoint_ids: Sequence[uuid.UUID]
) -> int:
    """Delivered rows of ``event_type`` written no later than ``until`` (unix seconds)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM deliveries WHERE event_type = :type "
                    "AND state = 'delivered' AND endpoint_id = ANY(:ids) "
                    "AND updated_at <= to_timestamp(:until)"
                ),
                {"type": event_type, "ids": list(endpoint_ids), "until": until},
            ).scalar_one()
        )


def cancel_open(
    engine: Engine,
    event_type: str | None = None,
    *,
    endpoint_ids: Sequence[uuid.UUID] | None = None,
    timeout: float = 60.0,
) -> int:
    """Cancel every open delivery of ``event_type`` (or of some endpoints).

    In chunks that skip the rows a worker holds right now, retried until none is open, so the
    harness never deadlocks with the engine's own updates.
    """
    if endpoint_ids is not None:
        where = "endpoint_id = ANY(:ids)"
        params: dict[str, Any] = {"ids": list(endpoint_ids)}
    else:
        where = "event_type = :type"
        params = {"type": event_type}
    # ``where`` is one of two constants above; the values are bound parameters.
    open_rows = f"{where} AND state IN ('pending', 'retrying', 'sending')"
    cancel = text(
        "UPDATE deliveries SET state = 'cancelled', next_attempt_at = NULL, "  # noqa: S608
        "lease_token = NULL, lease_expires_at = NULL WHERE id IN ("
        f"SELECT id FROM deliveries WHERE {open_rows} "
        "ORDER BY id LIMIT 5000 FOR UPDATE SKIP LOCKED)"
    )
    count_open = text(f"SELECT count(*) FROM deliveries WHERE {open_rows}")  # noqa: S608
    cancelled = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with engine.begin() as conn:
                result = conn.execute(cancel, params)
                cancelled += int(result.rowcount)
                if result.rowcount:
                    continue
            with engine.connect() as conn:
                left = conn.execute(count_open, params).scalar_one()
        except OperationalError:  # a deadlock with a worker: try again
            time.sleep(0.1)
            continue
        if not left:
            return cancelled
        time.sleep(0.2)
    return cancelled
