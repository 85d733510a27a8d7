"""Disabling through the API is the platform's one disable: breaker cleared, event emitted."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import Delivery, Endpoint, Message

ADMIN = {"Authorization": "Bearer test-admin-token-0123456789"}


def _endpoint(client: FlaskClient, tenant: Any, url: str, types: list[str]) -> str:
    created = client.post(
        tenant.path("/endpoints"), json={"url": url, "event_types": types}, headers=tenant.headers
    )
    assert created.status_code == 201, created.json
    return str(created.json["id"])


def _open_breaker(sessions: sessionmaker[Session], endpoint_id: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == uuid.UUID(endpoint_id))
            .values(
                consecutive_failures=7,
                failing_since=utcnow() - timedelta(hours=1),
                circuit_open_until=utcnow() + timedelta(minutes=10),
            )
        )


def test_disable_clears_the_breaker_and_emits_endpoint_disabled(
    client: FlaskClient, tenant: Any, event_types: list[str], sessions: sessionmaker[Session]
) -> None:
    made = client.post("/api/v1/event-types", json={"name": "endpoint.disabled"}, headers=ADMIN)
    assert made.status_code == 201, made.json
    target = _endpoint(client, tenant, "http://127.0.0.1:9/target", ["person.created"])
    watcher = _endpoint(client, tenant, "http://127.0.0.1:9/ops", ["endpoint.disabled"])
    _open_breaker(sessions, target)
    before = client.get(tenant.path(f"/endpoints/{target}"), headers=tenant.headers)
    assert before.json["health"]["state"] == "open"

    disabled = client.post(
        tenant.path(f"/endpoints/{target}/disable"),
        json={"reason": "maintenance"},
        headers=tenant.headers,
    )

    assert disabled.status_code == 200, disabled.json
    assert disabled.json["disabled_reason"] == "maintenance"
    assert disabled.json["circuit_open_until"] is None
    assert disabled.json["health"]["state"] == "disabled"
    with sessions() as session:
        messages = session.scalars(
            select(Message).where(Message.event_type == "endpoint.disabled")
        ).all()
        assert len(messages) == 1
        event = messages[0]
        assert str(event.application_id) == tenant.id
        assert event.source == "platform"
        assert event.payload["endpoint_id"] == target
        assert event.payload["reason"] == "manual"
        assert event.payload["detail"] == "maintenance"
        deliveries = session.scalars(select(Delivery).where(Delivery.message_id == event.id))
        assert [str(d.endpoint_id) for d in deliveries] == [watcher]

    # Disabling again changes nothing and emits nothing more.
    again = client.post(
        tenant.path(f"/endpoints/{target}/disable"), json={}, headers=tenant.headers
    )
    assert again.status_code == 200
    assert again.json["disabled_reason"] == "maintenance"
    with sessions() as session:
        count = len(
            session.scalars(select(Message).where(Message.event_type == "endpoint.disabled")).all()
        )
    assert count == 1


def test_enable_resets_the_breaker(
    client: FlaskClient, tenant: Any, event_types: list[str], sessions: sessionmaker[Session]
) -> None:
    target = _endpoint(client, tenant, "http://127.0.0.1:9/target", ["person.created"])
    _open_breaker(sessions, target)
    path = tenant.path(f"/endpoints/{target}")
    assert client.post(f"{path}/disable", json={}, headers=tenant.headers).status_code == 200
    _open_breaker(sessions, target)  # as an engine run finishing after the disable would

    enabled = client.post(f"{path}/enable", headers=tenant.headers)

    assert enabled.status_code == 200
    assert enabled.json["enabled"] is True
    assert enabled.json["consecutive_failures"] == 0
    assert enabled.json["circuit_open_until"] is None
    assert enabled.json["health"]["state"] == "healthy"
