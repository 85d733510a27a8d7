"""Recording what a batch taught about its endpoints' limits (``endpoint_flow``).

Part of the batch's recording transaction, after the endpoints' health and before the
deliveries (endpoint rows, then flow rows, then delivery rows, each in id order: the lock
order every writer keeps).  The rule is :func:`webhooks_core.endpoints.flow.adapt`; here it
runs twice: on the values the batch read when it was taken, to learn whether anything
changes (most batches of a healthy endpoint change nothing and write nothing), then on the
rows locked ``FOR UPDATE``, so that batches of one endpoint recording at once apply their
changes one after another.

Only for endpoints flow control is on for (:func:`~webhooks_core.endpoints.flow.flow_control_on`
as the batch read them; the write checks the endpoint's switch again, so a batch that was
in flight when an operator turned it off does not store a state the API just cleared).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from delivery.config import DeliverySettings
from delivery.sending import EndpointRun
from webhooks_core.endpoints.flow import FlowState, Limits, adapt, batch_signal, rate_unused
from webhooks_core.endpoints.flow_limits import FLOW_ON_SQL, effective_rate, flow_control_on
from webhooks_core.messages.envelope import utcnow

_LOCK = text(
    """
    SELECT endpoint_id, max_in_flight, rate_limit, rate_step, throttled_until, reason,
           latency_ms, decreased_at, changed_at
    FROM endpoint_flow WHERE endpoint_id = ANY(CAST(:ids AS uuid[]))
    ORDER BY endpoint_id
    FOR UPDATE
    """
)
_UPSERT = text(
    f"""
    INSERT INTO endpoint_flow AS f (endpoint_id, max_in_flight, rate_limit, rate_step,
                                    throttled_until, reason, latency_ms, decreased_at,
                                    changed_at)
    SELECT v.* FROM unnest(CAST(:ids AS uuid[]), CAST(:limits AS float8[]),
                           CAST(:rates AS float8[]), CAST(:steps AS float8[]),
                           CAST(:until AS timestamptz[]), CAST(:reasons AS text[]),
                           CAST(:latencies AS float8[]), CAST(:decreased AS timestamptz[]),
                           CAST(:changed AS timestamptz[]))
         AS v(endpoint_id, max_in_flight, rate_limit, rate_step, throttled_until, reason,
              latency_ms, decreased_at, changed_at)
         JOIN endpoints e ON e.id = v.endpoint_id AND {FLOW_ON_SQL}
    ON CONFLICT (endpoint_id) DO UPDATE SET
        max_in_flight = excluded.max_in_flight, rate_limit = excluded.rate_limit,
        rate_step = excluded.rate_step, throttled_until = excluded.throttled_until,
        reason = excluded.reason, latency_ms = excluded.latency_ms,
        decreased_at = excluded.decreased_at, changed_at = excluded.changed_at
    """  # noqa: S608 - a constant fragment
)


def record_flow(
    session: Session,
    settings: DeliverySettings,
    runs: Mapping[uuid.UUID, EndpointRun],
    now: datetime,
) -> None:
    """Adapt the limits of the batch's endpoints to what their receivers answered."""
    changing = [
        endpoint_id
        for endpoint_id in sorted(runs)
        if flow_control_on(runs[endpoint_id].endpoint.adaptive_flow, settings.flow_control)
        and _adapted(runs[endpoint_id], runs[endpoint_id].endpoint.flow, settings, now) is not None
    ]
    if not changing:
        return
    stored = {
        row.endpoint_id: FlowState(*row[1:])
        for row in session.execute(_LOCK, {"ids": [str(i) for i in changing]})
    }
    written: list[tuple[uuid.UUID, FlowState]] = []
    for endpoint_id in changing:
        new = _adapted(runs[endpoint_id], stored.get(endpoint_id, FlowState()), settings, now)
        if new is not None:
            written.append((endpoint_id, new))
    if written:
        session.execute(_UPSERT, _columns(written, now))


def _adapted(
    run: EndpointRun, state: FlowState, settings: DeliverySettings, now: datetime
) -> FlowState | None:
    """The endpoint's new flow state, or None when nothing worth writing changes."""
    signal = batch_signal(run.results, utcnow)
    if signal is None:
        return None
    if run.claimed_at is not None:
        # The window is the claim's: a batch leased before the last decrease was sized by
        # the limits before it, and brings no news about the new ones.
        signal = replace(signal, started_at=run.claimed_at)
    endpoint = run.endpoint
    rate = effective_rate(endpoint.rate_limit, endpoint.flow.rate_limit)
    if rate_unused(rate, endpoint.bucket_tokens):
        signal = replace(signal, rate_unused=True)
    limits = Limits(endpoint.max_in_flight or settings.endpoint_max_in_flight, endpoint.rate_limit)
    new = adapt(state, signal, limits, settings, now)
    return None if new.same_limits(state) else new


def _columns(written: list[tuple[uuid.UUID, FlowState]], now: datetime) -> dict[str, Any]:
    states = [state for _, state in written]
    return {
        "ids": [str(endpoint_id) for endpoint_id, _ in written],
        "limits": [s.max_in_flight for s in states],
        "rates": [s.rate_limit for s in states],
        "steps": [s.rate_step for s in states],
        "until": [s.throttled_until for s in states],
        "reasons": [s.reason for s in states],
        "latencies": [s.latency_ms for s in states],
        "decreased": [s.decreased_at for s in states],
        "changed": [s.changed_at or now for s in states],
    }


def forget_learnt_limits(session: Session) -> int:
    """Delete every endpoint's learnt limits; how many.  The scheduler does it when it starts
    with flow control off for the platform (``WEBHOOKS_FLOW_CONTROL=false``): nothing learns
    any more, so rows learnt before would otherwise bound the claim for ever."""
    return int(session.execute(text("DELETE FROM endpoint_flow")).rowcount)  # type: ignore[attr-defined]
