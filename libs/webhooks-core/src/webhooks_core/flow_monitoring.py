"""Gauges of the endpoints' adaptive limits, read from the database at scrape time (the
scheduler registers them with the other database gauges, :mod:`webhooks_core.monitoring`).

Only endpoints whose limits the engine lowered have a sample (an ``endpoint_flow`` row with
an adaptive value or a current ``Retry-After`` hold) while flow control is on for it: the
label set stays as small as the number of endpoints being throttled, not the number of
endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from webhooks_core.db import make_session_factory, run_transaction
from webhooks_core.endpoints.flow_limits import FLOW_ON_SQL, effective_in_flight

logger = logging.getLogger(__name__)

# At most this many endpoints get samples, the most constrained first (the lowest rate).
MAX_SERIES = 200
_ADAPTED = text(
    f"""
    SELECT f.endpoint_id, e.application_id, e.max_in_flight, e.rate_limit,
           f.max_in_flight AS adaptive_in_flight, f.rate_limit AS adaptive_rate,
           f.throttled_until > now() AS held
    FROM endpoint_flow f JOIN endpoints e ON e.id = f.endpoint_id AND {FLOW_ON_SQL}
    WHERE (f.max_in_flight IS NOT NULL OR f.rate_limit IS NOT NULL OR f.throttled_until > now())
      AND e.deleted_at IS NULL AND e.enabled
    ORDER BY f.rate_limit NULLS LAST, f.max_in_flight NULLS LAST
    LIMIT :limit
    """  # noqa: S608 - a constant fragment
)


class EndpointFlowGauges(Collector):
    """``webhooks_endpoint_flow_*``: the current adaptive limits of throttled endpoints."""

    def __init__(self, engine: Engine, default_max_in_flight: int) -> None:
        self._sessions = make_session_factory(engine)
        self._default = default_max_in_flight

    def collect(self) -> Iterable[Metric]:
        labels = ["application_id", "endpoint_id"]
        in_flight = GaugeMetricFamily(
            "webhooks_endpoint_flow_max_in_flight",
            "Batches in flight an endpoint is allowed now, for endpoints whose limits flow"
            " control lowered (429, 503, timeouts, rising latency).",
            labels=labels,
        )
        rate = GaugeMetricFamily(
            "webhooks_endpoint_flow_rate_limit",
            "Deliveries per second an endpoint is allowed now (flow control), for endpoints"
            " with a rate lowered below their configured one (or imposed where none was).",
            labels=labels,
        )
        held = GaugeMetricFamily(
            "webhooks_endpoint_flow_held",
            "1 while a Retry-After holds every delivery of the endpoint.",
            labels=labels,
        )
        try:
            rows = run_transaction(
                self._sessions,
                lambda session: session.execute(_ADAPTED, {"limit": MAX_SERIES}).all(),
                what="flow gauges",
            )
        except SQLAlchemyError as exc:
            logger.warning("flow gauges unavailable: %s", type(exc).__name__)
            return []
        for row in rows:
            key = [str(row.application_id), str(row.endpoint_id)]
            configured = row.max_in_flight or self._default
            in_flight.add_metric(key, effective_in_flight(configured, row.adaptive_in_flight))
            if row.adaptive_rate is not None:
                limit = min(row.adaptive_rate, row.rate_limit or row.adaptive_rate)
                rate.add_metric(key, float(limit))
            if row.held:
                held.add_metric(key, 1.0)
        return [in_flight, rate, held]
