"""How well an application's endpoints are receiving: success ratio, health state, countdown.

The state itself (healthy, failing, half open, open, disabled) is the shared reading of
:mod:`webhooks_core.endpoints.health`, the same one the API and the metrics show.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from webhooks_core.db import run_transaction
from webhooks_core.endpoints.health import EndpointCondition, endpoint_condition
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import AttemptStat, Endpoint
from webhooks_core.statistics import HOUR, bucket_start

WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class EndpointHealth:
    """Attempts of the last 24 hours (whole hours) and the endpoint's condition now."""

    attempts: int
    successes: int
    condition: EndpointCondition

    @property
    def state(self) -> str:
        """``healthy``, ``failing``, ``half_open``, ``open`` or ``disabled``."""
        return self.condition.state

    @property
    def success_ratio(self) -> float | None:
        """Successful attempts / attempts, None when nothing was attempted."""
        return self.successes / self.attempts if self.attempts else None


def condition_of(
    settings: APISettings, endpoint: Endpoint, now: datetime | None = None
) -> EndpointCondition:
    """The shared health reading of one endpoint with this service's settings."""
    return endpoint_condition(
        endpoint,
        threshold=settings.circuit_breaker_threshold,
        auto_disable_after_seconds=settings.auto_disable_after_seconds,
        now=now or utcnow(),
    )


def endpoint_health(
    sessions: sessionmaker[Session], settings: APISettings, endpoints: Iterable[Endpoint]
) -> dict[uuid.UUID, EndpointHealth]:
    """Health of each endpoint, from its hourly attempt summaries (``attempt_stats``).

    The window is the current hour and the 24 before it: a page of endpoints reads at most
    a few hundred summary rows, never the raw attempts, however busy the endpoints are.
    """
    endpoints = list(endpoints)
    if not endpoints:
        return {}
    now = utcnow()
    # Any 2xx is a success, whatever the engine names the outcome.
    success = (AttemptStat.status_class == "2xx").cast(Integer) * AttemptStat.attempts
    query = (
        select(
            AttemptStat.endpoint_id,
            func.coalesce(func.sum(AttemptStat.attempts), 0),
            func.coalesce(func.sum(success), 0),
        )
        .where(
            AttemptStat.endpoint_id.in_([endpoint.id for endpoint in endpoints]),
            AttemptStat.width == HOUR,
            AttemptStat.bucket >= bucket_start(now - WINDOW, HOUR),
        )
        .group_by(AttemptStat.endpoint_id)
    )

    def work(session: Session) -> dict[uuid.UUID, tuple[int, int]]:
        return {row[0]: (int(row[1]), int(row[2])) for row in session.execute(query)}

    counts = run_transaction(sessions, work)
    result = {}
    for endpoint in endpoints:
        attempts, successes = counts.get(endpoint.id, (0, 0))
        condition = condition_of(settings, endpoint, now)
        result[endpoint.id] = EndpointHealth(attempts, successes, condition)
    return result
