"""How well an application's endpoints are receiving: success ratio, breaker, last attempt."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.envelope import utcnow
from webhooks_core.models import Attempt, Endpoint

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class EndpointHealth:
    """Attempts of the last 24 hours and what the breaker says now."""

    attempts: int
    successes: int
    breaker: str  # "closed", "open" or "disabled"
    breaker_open_until: datetime | None

    @property
    def success_ratio(self) -> float | None:
        """Successful attempts / attempts, None when nothing was attempted."""
        return self.successes / self.attempts if self.attempts else None


def breaker_state(endpoint: Endpoint, now: datetime | None = None) -> str:
    """``disabled`` when disabled, ``open`` while the circuit rests, else ``closed``."""
    now = now or utcnow()
    if not endpoint.enabled:
        return "disabled"
    if endpoint.circuit_open_until is not None and endpoint.circuit_open_until > now:
        return "open"
    return "closed"


def endpoint_health(
    sessions: sessionmaker[Session], endpoints: Iterable[Endpoint]
) -> dict[uuid.UUID, EndpointHealth]:
    """Health of each endpoint, from one grouped query over its recent attempts."""
    endpoints = list(endpoints)
    if not endpoints:
        return {}
    now = utcnow()
    # Any 2xx is a success, whatever the engine names the outcome.
    success = and_(Attempt.status_code >= 200, Attempt.status_code < 300)
    query = (
        select(
            Attempt.endpoint_id,
            func.count(),
            func.coalesce(func.sum(success.cast(Integer)), 0),
        )
        .where(
            Attempt.endpoint_id.in_([endpoint.id for endpoint in endpoints]),
            Attempt.started_at > now - WINDOW,
        )
        .group_by(Attempt.endpoint_id)
    )
    with sessions() as session:
        counts = {row[0]: (int(row[1]), int(row[2])) for row in session.execute(query)}
    result = {}
    for endpoint in endpoints:
        attempts, successes = counts.get(endpoint.id, (0, 0))
        state = breaker_state(endpoint, now)
        open_until = endpoint.circuit_open_until if state == "open" else None
        result[endpoint.id] = EndpointHealth(attempts, successes, state, open_until)
    return result
