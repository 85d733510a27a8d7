# ruff: noqa: S608 - statements built from constants and dates made here, never from input
"""Rows deleted or emptied one bounded batch at a time (what partitions do not drop).

* attempts of applications whose retention is shorter than the longest one (their rows sit
  in day partitions kept for another application);
* messages (with their deliveries, those deliveries' attempts and dead letters, and their
  idempotency keys, by the foreign keys' ``ON DELETE CASCADE``) past their application's
  message retention;
* payloads past the payload retention: replaced by ``{}``, ``payload_dropped_at`` set.

Nothing of a delivery that is not terminal is touched: a message with an open delivery keeps
its payload and its rows, an attempt of an open delivery stays.  Each statement handles at
most ``batch`` rows in its own transaction, so locks stay short.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import run_transaction
from webhooks_core.deliveries.states import OPEN_SQL

# A message's retention: its application's (or the default); a broadcast's: the longest.
_MESSAGE_DAYS = (
    "coalesce({column}, CASE WHEN m.application_id IS NULL THEN :longest ELSE :default END)"
)
# The statements below are built from the constants above only (no input): noqa S608.
_NO_OPEN_DELIVERY = (
    f"NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.state IN {OPEN_SQL})"
)

DELETE_ATTEMPTS = f"""
DELETE FROM attempts WHERE (id, started_at) IN (
    SELECT a.id, a.started_at FROM attempts a
    JOIN endpoints e ON e.id = a.endpoint_id
    JOIN applications app ON app.id = e.application_id
    WHERE a.started_at < :before
      AND a.started_at < :now - make_interval(days =>
            coalesce(app.retention_attempts_days, :default))
      AND NOT EXISTS (SELECT 1 FROM deliveries d
                      WHERE d.id = a.delivery_id AND d.state IN {OPEN_SQL})
    LIMIT :batch)
"""
DELETE_MESSAGES = f"""
DELETE FROM messages WHERE id IN (
    SELECT m.id FROM messages m LEFT JOIN applications app ON app.id = m.application_id
    WHERE m.created_at < :before
      AND m.created_at < :now - make_interval(days =>
            {_MESSAGE_DAYS.format(column="app.retention_messages_days")})
      AND {_NO_OPEN_DELIVERY}
    ORDER BY m.created_at
    LIMIT :batch)
"""
DROP_PAYLOADS = f"""
UPDATE messages SET payload = '{{}}'::jsonb, payload_dropped_at = :now WHERE id IN (
    SELECT m.id FROM messages m LEFT JOIN applications app ON app.id = m.application_id
    WHERE m.created_at < :before AND m.payload_dropped_at IS NULL
      AND m.created_at < :now - make_interval(days =>
            {_MESSAGE_DAYS.format(column="app.retention_payload_days")})
      AND {_NO_OPEN_DELIVERY}
    ORDER BY m.created_at
    LIMIT :batch)
"""


def _batches(
    sessions: sessionmaker[Session], statement: str, params: dict[str, Any], max_batches: int
) -> int:
    """Run ``statement`` until it touches fewer than a batch (or ``max_batches`` ran)."""
    total = 0
    for _ in range(max_batches):

        def one(session: Session) -> int:
            result = session.execute(text(statement), params)
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

        count = run_transaction(sessions, one, what="retention batch")
        total += count
        if count < params["batch"]:
            break
    return total


def delete_attempts(
    sessions: sessionmaker[Session],
    now: datetime,
    before: datetime,
    default_days: int,
    batch: int,
    max_batches: int,
) -> int:
    """Delete attempts older than their application's retention (those before ``before``)."""
    params = {"now": now, "before": before, "default": default_days, "batch": batch}
    return _batches(sessions, DELETE_ATTEMPTS, params, max_batches)


def delete_messages(
    sessions: sessionmaker[Session],
    now: datetime,
    before: datetime,
    days: tuple[int, int],
    batch: int,
    max_batches: int,
) -> int:
    """Delete messages (and what hangs on them) older than their application's retention.

    ``days`` is (the default, the longest of any application) in days; ``before`` the
    cutoff of the shortest, which bounds the index range read.
    """
    params = {"now": now, "before": before, "default": days[0], "longest": days[1], "batch": batch}
    return _batches(sessions, DELETE_MESSAGES, params, max_batches)


def drop_payloads(
    sessions: sessionmaker[Session],
    now: datetime,
    before: datetime,
    days: tuple[int | None, int],
    batch: int,
    max_batches: int,
) -> int:
    """Replace by ``{}`` the payloads older than their application's payload retention.

    ``days`` is (the default payload days or None, the longest message days); an
    application without payload days, under a default of None, keeps payloads as long as
    messages (the longest bound: they go with the message first).
    """
    default = days[0] if days[0] is not None else days[1]
    params = {"now": now, "before": before, "default": default, "longest": days[1], "batch": batch}
    return _batches(sessions, DROP_PAYLOADS, params, max_batches)
