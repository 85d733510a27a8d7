"""The ordering keys of an endpoint that wait: what the console and the API show.

A key waits when its oldest open delivery failed and waits for its retry, or, under the
endpoint's ``block`` policy, a dead-lettered delivery holds it until redriven (the rule is
:mod:`webhooks_core.deliveries.ordering`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from registration.services.endpoint_lookup import load_endpoint
from webhooks_core.db import run_transaction
from webhooks_core.deliveries.ordering import WAITING_KEYS_SQL

_WAITING = text(WAITING_KEYS_SQL)


@dataclass(frozen=True)
class WaitingKey:
    """One waiting key: its head delivery and how many open deliveries it holds."""

    ordering_key: str
    head_delivery_id: int
    head_state: str
    next_attempt_at: datetime | None
    attempt_count: int
    last_error: str | None
    blocked_by: int | None  # the dead delivery that blocks it (policy block)
    open_deliveries: int


@dataclass(frozen=True)
class WaitingKeys:
    """The waiting keys of an endpoint: how many in all, and the first ``limit`` of them."""

    keys_waiting: int
    keys: list[WaitingKey]


def waiting_keys(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID, limit: int = 100
) -> WaitingKeys:
    """The endpoint's waiting keys, the longest waiting first (404 for an unknown endpoint)."""

    def work(session: Session) -> WaitingKeys:
        load_endpoint(session, app_id, endpoint_id)
        rows = session.execute(_WAITING, {"endpoint_id": endpoint_id, "limit": limit}).all()
        keys = [
            WaitingKey(
                row.ordering_key,
                row.head_delivery_id,
                row.head_state,
                row.next_attempt_at,
                row.attempt_count,
                row.last_error,
                row.blocked_by,
                row.open_deliveries,
            )
            for row in rows
        ]
        return WaitingKeys(rows[0].keys_waiting if rows else 0, keys)

    return run_transaction(sessions, work)
