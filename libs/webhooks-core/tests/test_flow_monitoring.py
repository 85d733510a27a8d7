"""Gauges of the endpoints' adaptive limits: samples only for the endpoints flow control
lowered."""

from __future__ import annotations

import uuid
from datetime import timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.db import transaction
from webhooks_core.flow_monitoring import EndpointFlowGauges
from webhooks_core.models import Application, Endpoint, EndpointFlow


def samples(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def make_endpoint(session: Session, app_id: uuid.UUID, **fields: object) -> Endpoint:
    endpoint = Endpoint(application_id=app_id, url=f"https://example.com/{uuid.uuid4()}", **fields)
    session.add(endpoint)
    session.flush()
    return endpoint


def test_flow_gauges_cover_only_throttled_endpoints(
    db: sessionmaker[Session], engine: Engine
) -> None:
    with transaction(db) as session:
        app = Application(name="flow")
        session.add(app)
        session.flush()
        lowered = make_endpoint(session, app.id, max_in_flight=8)
        imposed = make_endpoint(session, app.id)
        held = make_endpoint(session, app.id, rate_limit=100)
        healthy = make_endpoint(session, app.id)
        back = make_endpoint(session, app.id)
        now = session.scalar(select(func.now()))
        session.add_all(
            [
                EndpointFlow(endpoint_id=lowered.id, max_in_flight=2.7, reason="timeout"),
                EndpointFlow(endpoint_id=imposed.id, rate_limit=140.0, reason="429"),
                EndpointFlow(endpoint_id=held.id, throttled_until=now + timedelta(minutes=1)),
                EndpointFlow(endpoint_id=back.id, latency_ms=12.0),
            ]
        )
        ids = {e.id: str(e.id) for e in (lowered, imposed, held, healthy, back)}
        app_id = str(app.id)
    values = samples(EndpointFlowGauges(engine, default_max_in_flight=4))

    def key(name: str, endpoint: Endpoint) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, (("application_id", app_id), ("endpoint_id", ids[endpoint.id])))

    assert values[key("webhooks_endpoint_flow_max_in_flight", lowered)] == 2
    assert values[key("webhooks_endpoint_flow_max_in_flight", imposed)] == 4
    assert values[key("webhooks_endpoint_flow_rate_limit", imposed)] == 140.0
    assert values[key("webhooks_endpoint_flow_held", held)] == 1.0
    endpoints_sampled = {dict(labels)["endpoint_id"] for _, labels in values}
    assert endpoints_sampled == {ids[lowered.id], ids[imposed.id], ids[held.id]}
